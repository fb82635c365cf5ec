//! Retention arithmetic: ISO 8601 periods and the retain-until they give.
//!
//! `P3Y` from 2026-02-28 is 2029-02-28; `P1M` from 2026-01-31 is 2026-02-28 (the month's last
//! day, never a spill into March): calendar arithmetic as records schedules mean it, in UTC.

use crate::entry::RetainUntil;
use crate::time::{UnixTime, days_in_month};
use std::fmt;
use std::str::FromStr;

/// A retention period: years, months, days (ISO 8601 `PnYnMnD`, or `PnW`), or permanent.
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
    },
    /// Kept forever.
    Permanent,
}

/// A period that is not ISO 8601 `PnYnMnD` (or `Permanent`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a retention period: use an ISO 8601 duration of years, months, weeks or days such as P3Y, P18M, P1Y6M, P30D, or Permanent"
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
        if rest.is_empty() {
            return Err(err());
        }
        let (mut years, mut months, mut days) = (0u32, 0u32, 0u32);
        let mut number = String::new();
        let mut last_unit = 0; // Y=1, M=2, W=3, D=4: units in order, each once
        for c in rest.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let n: u32 = number.parse().map_err(|_| err())?;
            number.clear();
            let unit = match c {
                'Y' => 1,
                'M' => 2,
                'W' => 3,
                'D' => 4,
                _ => return Err(err()),
            };
            if unit <= last_unit {
                return Err(err());
            }
            last_unit = unit;
            match c {
                'Y' => years = n,
                'M' => months = n,
                'W' => days = n.checked_mul(7).ok_or_else(err)?,
                _ => days = days.checked_add(n).ok_or_else(err)?,
            }
        }
        if !number.is_empty() || years > 1000 || months > 12_000 || days > 400_000 {
            return Err(err());
        }
        Ok(Self::Span {
            years,
            months,
            days,
        })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Permanent => f.write_str("Permanent"),
            Self::Span {
                years,
                months,
                days,
            } => {
                f.write_str("P")?;
                if years > 0 {
                    write!(f, "{years}Y")?;
                }
                if months > 0 {
                    write!(f, "{months}M")?;
                }
                if days > 0 || (years == 0 && months == 0) {
                    write!(f, "{days}D")?;
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
        RetainUntil::Until(UnixTime(base.0 + i64::from(days) * 86_400))
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
        for (s, y, m, d) in [
            ("P3Y", 3, 0, 0),
            ("P18M", 0, 18, 0),
            ("P1Y6M", 1, 6, 0),
            ("P30D", 0, 0, 30),
            ("P2W", 0, 0, 14),
            ("P1Y2M3D", 1, 2, 3),
        ] {
            assert_eq!(
                s.parse::<Period>().unwrap(),
                Period::Span {
                    years: y,
                    months: m,
                    days: d
                },
                "{s}"
            );
        }
        assert_eq!("Permanent".parse::<Period>().unwrap(), Period::Permanent);
        assert_eq!("P1Y6M".parse::<Period>().unwrap().to_string(), "P1Y6M");
        for bad in [
            "", "P", "3Y", "P3", "PY", "P1M1Y", "P1Y1Y", "PT1H", "P-1Y", "p3y", "P3Y ", "P99999Y",
            "forever",
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
            p("Permanent").retain_until(t("2026-12-15T00:00:00Z")),
            RetainUntil::Permanent
        );
    }
}
