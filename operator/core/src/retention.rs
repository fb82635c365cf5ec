//! Retention arithmetic: ISO 8601 periods and the retain-until they give.
//!
//! `P3Y` from 2026-02-28 is 2029-02-28; `P1M` from 2026-01-31 is 2026-02-28 (the month's last
//! day, never a spill into March): calendar arithmetic as records schedules mean it, in UTC.
//! Years and months are added first, then days, then the time part (`PT5S`, `P1DT12H`): in UTC
//! a day is always 86,400 seconds, so hours, minutes and seconds are exact. The time part is
//! for tests and demonstrations (records that expire seconds after archiving); schedules speak
//! in years.

use crate::entry::RetainUntil;
use crate::time::{UnixTime, days_in_month};
use std::fmt;
use std::str::FromStr;

/// A retention period: years, months, days and a time part (ISO 8601 `PnYnMnDTnHnMnS`, or
/// `PnW`), or permanent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Kept for this long.
    Span {
        /// Years.
        years: u32,
        /// Months.
        months: u32,
        /// Days.
        days: u32,
        /// The time part (`TnHnMnS`) in seconds.
        seconds: u64,
    },
    /// Kept forever.
    Permanent,
}

/// A period that is not ISO 8601 `PnYnMnD` (or `Permanent`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a retention period: use an ISO 8601 duration of years, months, weeks, days (and hours, minutes, seconds after a T) such as P3Y, P18M, P1Y6M, P30D, PT5S, or Permanent"
)]
pub struct PeriodParseError(pub String);

impl FromStr for Period {
    type Err = PeriodParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeriodParseError(s.chars().take(40).collect());
        if s == "Permanent" {
            return Ok(Self::Permanent);
        }
        let rest = s.strip_prefix('P').ok_or_else(err)?;
        let (date, time) = match rest.split_once('T') {
            // A `T` must be followed by at least one time unit.
            Some((_, "")) => return Err(err()),
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        if date.is_empty() && time.is_none() {
            return Err(err());
        }
        let (mut years, mut months, mut days) = (0u32, 0u32, 0u32);
        for (unit, n) in units(date, "YMWD").ok_or_else(err)? {
            match unit {
                'Y' => years = u32::try_from(n).map_err(|_| err())?,
                'M' => months = u32::try_from(n).map_err(|_| err())?,
                'W' => {
                    days = u32::try_from(n.checked_mul(7).ok_or_else(err)?).map_err(|_| err())?;
                }
                _ => {
                    days = days
                        .checked_add(u32::try_from(n).map_err(|_| err())?)
                        .ok_or_else(err)?;
                }
            }
        }
        let mut seconds = 0u64;
        for (unit, n) in units(time.unwrap_or(""), "HMS").ok_or_else(err)? {
            let scale = match unit {
                'H' => 3600,
                'M' => 60,
                _ => 1,
            };
            seconds = n
                .checked_mul(scale)
                .and_then(|s| seconds.checked_add(s))
                .ok_or_else(err)?;
        }
        if years > 1000 || months > 12_000 || days > 400_000 || seconds > MAX_TIME_PART_SECS {
            return Err(err());
        }
        Ok(Self::Span {
            years,
            months,
            days,
            seconds,
        })
    }
}

/// Longest time part accepted: as long as the longest day part (400,000 days).
const MAX_TIME_PART_SECS: u64 = 400_000 * 86_400;

/// `text` as numbers each followed by one of `allowed`, in that order, each unit at most once;
/// `None` for anything else (an empty text gives no units).
fn units(text: &str, allowed: &str) -> Option<Vec<(char, u64)>> {
    let mut out = Vec::new();
    let mut number = String::new();
    let mut last: Option<usize> = None;
    for c in text.chars() {
        if c.is_ascii_digit() {
            // More digits than any accepted value needs: refused before parsing.
            if number.len() >= 12 {
                return None;
            }
            number.push(c);
            continue;
        }
        let position = allowed.find(c)?;
        if last.is_some_and(|l| position <= l) || number.is_empty() {
            return None;
        }
        last = Some(position);
        out.push((c, number.parse().ok()?));
        number.clear();
    }
    number.is_empty().then_some(out)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Permanent => f.write_str("Permanent"),
            Self::Span {
                years,
                months,
                days,
                seconds,
            } => {
                f.write_str("P")?;
                if years > 0 {
                    write!(f, "{years}Y")?;
                }
                if months > 0 {
                    write!(f, "{months}M")?;
                }
                if days > 0 || (years == 0 && months == 0 && seconds == 0) {
                    write!(f, "{days}D")?;
                }
                if seconds > 0 {
                    f.write_str("T")?;
                    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
                    if h > 0 {
                        write!(f, "{h}H")?;
                    }
                    if m > 0 {
                        write!(f, "{m}M")?;
                    }
                    if s > 0 {
                        write!(f, "{s}S")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl Period {
    /// The retain-until for a record whose retention starts at `from`.
    pub fn retain_until(self, from: UnixTime) -> RetainUntil {
        let Self::Span {
            years,
            months,
            days,
            seconds,
        } = self
        else {
            return RetainUntil::Permanent;
        };
        let (y, m, d, hh, mm, ss) = from.to_civil();
        let total_months = i64::from(m - 1) + i64::from(months) + 12 * i64::from(years);
        let year = y + total_months.div_euclid(12);
        // In 1..=12 by construction.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let month = (total_months.rem_euclid(12) + 1) as u32;
        let day = d.min(days_in_month(year, month));
        let base = UnixTime::from_civil(year, month, day, hh, mm, ss).unwrap_or(from);
        // Both parts are capped at 400,000 days by the parser: no overflow.
        let time = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
        RetainUntil::Until(UnixTime(base.0 + i64::from(days) * 86_400 + time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> UnixTime {
        UnixTime::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for (s, y, m, d, secs) in [
            ("P3Y", 3, 0, 0, 0),
            ("P18M", 0, 18, 0, 0),
            ("P1Y6M", 1, 6, 0, 0),
            ("P30D", 0, 0, 30, 0),
            ("P2W", 0, 0, 14, 0),
            ("P1Y2M3D", 1, 2, 3, 0),
            ("PT5S", 0, 0, 0, 5),
            ("PT1M30S", 0, 0, 0, 90),
            ("PT90S", 0, 0, 0, 90),
            ("P1DT12H", 0, 0, 1, 43_200),
            ("P1MT1M", 0, 1, 0, 60),
        ] {
            assert_eq!(
                s.parse::<Period>().unwrap(),
                Period::Span {
                    years: y,
                    months: m,
                    days: d,
                    seconds: secs,
                },
                "{s}"
            );
        }
        assert_eq!("PT90S".parse::<Period>().unwrap().to_string(), "PT1M30S");
        assert_eq!("P1DT12H".parse::<Period>().unwrap().to_string(), "P1DT12H");
        assert_eq!("PT5S".parse::<Period>().unwrap().to_string(), "PT5S");
        assert_eq!("Permanent".parse::<Period>().unwrap(), Period::Permanent);
        assert_eq!("P1Y6M".parse::<Period>().unwrap().to_string(), "P1Y6M");
        for bad in [
            "",
            "P",
            "3Y",
            "P3",
            "PY",
            "P1M1Y",
            "P1Y1Y",
            "P1H",
            "P-1Y",
            "p3y",
            "P3Y ",
            "P99999Y",
            "forever",
            "PT",
            "P1YT",
            "PT1S1M",
            "PT5",
            "PTS",
            "P1DT1D",
            "PT1Y",
            "T5S",
            "PT5S ",
            "PT99999999999999S",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_arithmetic() {
        let p = |s: &str| s.parse::<Period>().unwrap();
        assert_eq!(
            p("P3Y").retain_until(t("2026-02-28T10:00:00Z")),
            RetainUntil::Until(t("2029-02-28T10:00:00Z"))
        );
        assert_eq!(
            p("P1Y").retain_until(t("2028-02-29T00:00:00Z")),
            RetainUntil::Until(t("2029-02-28T00:00:00Z"))
        );
        assert_eq!(
            p("P1M").retain_until(t("2026-01-31T00:00:00Z")),
            RetainUntil::Until(t("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            p("P13M").retain_until(t("2026-12-15T00:00:00Z")),
            RetainUntil::Until(t("2028-01-15T00:00:00Z"))
        );
        assert_eq!(
            p("P30D").retain_until(t("2026-12-15T00:00:00Z")),
            RetainUntil::Until(t("2027-01-14T00:00:00Z"))
        );
        assert_eq!(
            p("PT5S").retain_until(t("2026-12-31T23:59:58Z")),
            RetainUntil::Until(t("2027-01-01T00:00:03Z"))
        );
        assert_eq!(
            p("P1MT1H").retain_until(t("2026-01-31T23:30:00Z")),
            RetainUntil::Until(t("2026-03-01T00:30:00Z"))
        );
        assert_eq!(
            p("Permanent").retain_until(t("2026-12-15T00:00:00Z")),
            RetainUntil::Permanent
        );
    }
}
