//! Cron schedules: when a job runs next, and whether a run was missed.
//!
//! Pure: every function takes `now`. Expressions are standard crontab, as Vixie cron reads them:
//!
//! - 5 fields `minute hour day-of-month month day-of-week`, or 6 with a leading seconds field;
//! - lists, ranges and steps (`1,15`, `1-5`, `*/10`, `8-18/2`), names (`mon`, `jan`);
//! - Sunday is `0` or `7`;
//! - `@hourly @daily @midnight @weekly @monthly @yearly @annually` (`@reboot` is refused);
//! - when both day-of-month and day-of-week are restricted, a day matches if **either** does
//!   (`0 0 1 * mon`: the 1st and every Monday); when either field starts with `*` (`*/2`), both
//!   must match — exactly Vixie cron's rule.
//!
//! Times are read in the job's IANA time zone. Daylight-saving changes:
//!
//! - **A skipped time** (02:30 on the spring-forward day in Europe/Berlin, where 02:00 jumps to
//!   03:00) runs once, at the first valid time after the gap (03:00 local).
//! - **A repeated time** (02:30 on the fall-back day, which happens twice) runs once, at its
//!   first pass (02:30 CEST). Times in the repeated hour are not run again at the second pass.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use dr_catalog::schedule::Schedule;
//! let s = Schedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
//! let now = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
//! assert_eq!(s.next_after(now).unwrap(), Utc.with_ymd_and_hms(2026, 11, 23, 2, 0, 0).unwrap());
//! ```

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron expression `{expr}` is not valid: {reason}")]
    BadExpression { expr: String, reason: String },
    #[error("time zone `{0}` is not an IANA time zone")]
    BadTimezone(String),
    #[error("cron expression `{0}` has no next run (it names a date that never comes)")]
    NoNextRun(String),
}

impl ScheduleError {
    /// The next step for the operator (never part of the message).
    pub fn hint(&self) -> Option<String> {
        match self {
            ScheduleError::BadExpression { .. } => Some("write 5 fields `minute hour day-of-month month day-of-week` (e.g. \"0 3 * * *\" for 03:00 daily), optionally a leading seconds field, or @daily/@weekly/@monthly/@hourly".into()),
            ScheduleError::BadTimezone(_) => Some("write e.g. timezone = \"Europe/Berlin\" or \"UTC\"".into()),
            ScheduleError::NoNextRun(_) => None,
        }
    }
}

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.expr, self.tz)
    }
}

/// The 5- or 6-field form of a nickname; `None` for anything else.
fn expand_nickname(expr: &str) -> Result<Option<&'static str>, ScheduleError> {
    if !expr.starts_with('@') {
        return Ok(None);
    }
    let lower = expr.to_ascii_lowercase();
    let expanded = match lower.as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => {
            return Err(ScheduleError::BadExpression {
                expr: expr.to_string(),
                reason: "@reboot is not supported by dr daemon (missed runs are caught up on start anyway)".into(),
            })
        }
        _ => {
            return Err(ScheduleError::BadExpression {
                expr: expr.to_string(),
                reason: "unknown nickname; known: @hourly @daily @midnight @weekly @monthly @yearly @annually".into(),
            })
        }
    };
    Ok(Some(expanded))
}

impl Schedule {
    /// Parse `expr` read in the IANA zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let tz: Tz = tz
            .parse()
            .map_err(|_| ScheduleError::BadTimezone(tz.to_string()))?;
        Schedule::new(expr, tz)
    }

    /// Parse `expr` read in `tz`.
    pub fn new(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let original = expr.trim();
        let bad = |reason: String| ScheduleError::BadExpression {
            expr: original.to_string(),
            reason,
        };
        let text = expand_nickname(original)?.unwrap_or(original);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(bad(format!(
                "it has {} field{}, expected 5 (or 6 with seconds first)",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            )));
        }
        // croner replaces names anywhere in the text; allow them only where cron does.
        for (i, f) in fields.iter().enumerate() {
            let is_dow = i == fields.len() - 1;
            let is_month = i == fields.len() - 2;
            if f.chars().any(|c| c.is_ascii_alphabetic()) && !is_dow && !is_month {
                return Err(bad(format!(
                    "field `{f}`: names are allowed only in the month and day-of-week fields"
                )));
            }
        }
        let dom = fields[fields.len() - 3];
        let dow = fields[fields.len() - 1];
        let starred = |f: &str| f.starts_with('*') || f.starts_with('?');
        let mut builder = Cron::new(&fields.join(" "));
        builder.with_seconds_optional();
        // Vixie cron: if either day field starts with `*`, a day must match both; croner
        // treats only a bare `*` that way and ORs everything else.
        if starred(dom) || starred(dow) {
            builder.with_dom_and_dow();
        }
        let cron = builder.parse().map_err(|e| bad(e.to_string()))?;
        let schedule = Schedule {
            expr: original.to_string(),
            cron,
            tz,
        };
        // An expression that can never match (`0 0 31 2 *`) is an error now, not at 3 a.m.
        schedule.next_after(Utc.timestamp_opt(0, 0).single().unwrap_or_else(Utc::now))?;
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first run strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let no_next = || ScheduleError::NoNextRun(self.expr.clone());
        let mut from = now.with_timezone(&self.tz);
        // In a repeated (fall-back) hour croner maps a local time to its first pass, which can
        // lie before `now`: that time has already had its run, so search on past it.
        for _ in 0..10_000 {
            let next = self
                .cron
                .find_next_occurrence(&from, false)
                .map_err(|_| no_next())?;
            let next_utc = next.with_timezone(&Utc);
            if next_utc > now {
                return Ok(next_utc);
            }
            from = next;
        }
        Err(no_next())
    }

    /// The next `n` runs after `now`.
    pub fn upcoming(
        &self,
        now: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, ScheduleError> {
        let mut out = Vec::with_capacity(n);
        let mut t = now;
        for _ in 0..n {
            t = self.next_after(t)?;
            out.push(t);
        }
        Ok(out)
    }

    /// Whether a run was due in `(last_run, now]`, i.e. the last run is older than the
    /// schedule's period. A job that never ran (`None`) has missed its run.
    pub fn missed(&self, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match last_run {
            None => true,
            Some(last) => self.next_after(last).is_ok_and(|next| next <= now),
        }
    }
}

/// The first run of `expr` (read in `tz`) strictly after `now`.
pub fn next_after(expr: &str, tz: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    Schedule::new(expr, tz)?.next_after(now)
}

/// Whether `expr` (read in `tz`) had a run in `(last_run, now]`.
pub fn missed(
    expr: &str,
    tz: Tz,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<bool, ScheduleError> {
    Ok(Schedule::new(expr, tz)?.missed(last_run, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{Europe::Berlin, UTC};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn next(expr: &str, tz: Tz, now: &str) -> String {
        next_after(expr, tz, utc(now))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_rfc3339()
    }

    fn runs(expr: &str, tz: Tz, now: &str, n: usize) -> Vec<String> {
        Schedule::new(expr, tz)
            .and_then(|s| s.upcoming(utc(now), n))
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(DateTime::to_rfc3339)
            .collect()
    }

    fn err(expr: &str) -> String {
        match Schedule::new(expr, UTC) {
            Ok(_) => panic!("`{expr}` should be refused"),
            Err(e) => e.to_string(),
        }
    }

    // 2026-11-22 is a Sunday.
    const SUNDAY_NOON: &str = "2026-11-22T12:00:00+00:00";

    #[test]
    fn nightly_at_three() {
        assert_eq!(
            next("0 3 * * *", UTC, SUNDAY_NOON),
            "2026-11-23T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", UTC, "2026-11-22T02:59:59+00:00"),
            "2026-11-22T03:00:00+00:00"
        );
        // Strictly after: at exactly 03:00 the next run is tomorrow's.
        assert_eq!(
            next("0 3 * * *", UTC, "2026-11-22T03:00:00+00:00"),
            "2026-11-23T03:00:00+00:00"
        );
    }

    #[test]
    fn a_job_zone_moves_the_run() {
        // 03:00 in Berlin in winter (CET, UTC+1) is 02:00 UTC.
        assert_eq!(
            next("0 3 * * *", Berlin, SUNDAY_NOON),
            "2026-11-23T02:00:00+00:00"
        );
    }

    #[test]
    fn sunday_is_0_or_7_or_sun() {
        let now = "2026-11-23T00:00:00+00:00"; // Monday
        let want = "2026-11-29T05:00:00+00:00"; // next Sunday
        for expr in ["0 5 * * 0", "0 5 * * 7", "0 5 * * sun", "0 5 * * SUN"] {
            assert_eq!(next(expr, UTC, now), want, "{expr}");
        }
        assert_eq!(next("* * * * 7", UTC, now), "2026-11-29T00:00:00+00:00");
        // Ranges ending on Sunday: `sat-sun` and `6-7`.
        for expr in [
            "0 0 * * sat-sun",
            "0 0 * * 6-7",
            "0 0 * * 6,7",
            "0 0 * * 6,0",
        ] {
            assert_eq!(
                runs(expr, UTC, "2026-11-23T00:00:00+00:00", 2),
                ["2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00"],
                "{expr}"
            );
        }
        assert_eq!(
            runs("0 0 * * fri-sun", UTC, "2026-11-23T00:00:00+00:00", 4),
            [
                "2026-11-27T00:00:00+00:00",
                "2026-11-28T00:00:00+00:00",
                "2026-11-29T00:00:00+00:00",
                "2026-12-04T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn names_ranges_steps_lists() {
        assert_eq!(
            runs("30 9 * * mon-fri", UTC, "2026-11-27T10:00:00+00:00", 2), // Friday
            ["2026-11-30T09:30:00+00:00", "2026-12-01T09:30:00+00:00"]
        );
        assert_eq!(
            runs("0 0 1 jan,jul *", UTC, SUNDAY_NOON, 2),
            ["2027-01-01T00:00:00+00:00", "2027-07-01T00:00:00+00:00"]
        );
        assert_eq!(
            runs("*/20 8-9 * * *", UTC, SUNDAY_NOON, 4),
            [
                "2026-11-23T08:00:00+00:00",
                "2026-11-23T08:20:00+00:00",
                "2026-11-23T08:40:00+00:00",
                "2026-11-23T09:00:00+00:00"
            ]
        );
        assert_eq!(
            runs("0 1-10/3 * * *", UTC, SUNDAY_NOON, 4),
            [
                "2026-11-23T01:00:00+00:00",
                "2026-11-23T04:00:00+00:00",
                "2026-11-23T07:00:00+00:00",
                "2026-11-23T10:00:00+00:00"
            ]
        );
    }

    #[test]
    fn nicknames() {
        assert_eq!(
            next("@daily", UTC, SUNDAY_NOON),
            "2026-11-23T00:00:00+00:00"
        );
        assert_eq!(
            next("@midnight", UTC, SUNDAY_NOON),
            "2026-11-23T00:00:00+00:00"
        );
        assert_eq!(
            next("@hourly", UTC, SUNDAY_NOON),
            "2026-11-22T13:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", UTC, SUNDAY_NOON),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", UTC, SUNDAY_NOON),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", UTC, SUNDAY_NOON),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@annually", UTC, SUNDAY_NOON),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@DAILY", UTC, SUNDAY_NOON),
            "2026-11-23T00:00:00+00:00"
        );
    }

    #[test]
    fn optional_seconds_field() {
        assert_eq!(
            runs("* * * * * *", UTC, SUNDAY_NOON, 2),
            ["2026-11-22T12:00:01+00:00", "2026-11-22T12:00:02+00:00"]
        );
        assert_eq!(
            next("30 0 3 * * *", UTC, SUNDAY_NOON),
            "2026-11-23T03:00:30+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_like_vixie_cron() {
        // Both restricted: either matches. 2026-12-01 is a Tuesday.
        assert_eq!(
            runs("0 0 1 * mon", UTC, SUNDAY_NOON, 3),
            [
                "2026-11-23T00:00:00+00:00", // Monday
                "2026-11-30T00:00:00+00:00", // Monday
                "2026-12-01T00:00:00+00:00"  // the 1st
            ]
        );
        // Day-of-month starts with `*`: both must match (odd days that are Mondays).
        assert_eq!(
            runs("0 0 */2 * mon", UTC, SUNDAY_NOON, 2),
            ["2026-11-23T00:00:00+00:00", "2026-12-07T00:00:00+00:00"]
        );
        // Only one restricted: that one decides.
        assert_eq!(
            next("0 0 13 * *", UTC, SUNDAY_NOON),
            "2026-12-13T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * fri", UTC, SUNDAY_NOON),
            "2026-11-27T00:00:00+00:00"
        );
    }

    #[test]
    fn leap_day() {
        assert_eq!(
            next("0 0 29 2 *", UTC, SUNDAY_NOON),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            runs("0 0 29 2 *", UTC, SUNDAY_NOON, 2),
            ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]
        );
    }

    #[test]
    fn a_date_that_never_comes_is_refused() {
        let e = err("0 0 31 2 *");
        assert!(e.contains("0 0 31 2 *"), "{e}");
    }

    #[test]
    fn dst_spring_forward_in_berlin() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        let before = "2026-03-28T23:00:00+00:00"; // 00:00 CET
                                                  // A skipped time runs once, at the first valid time after the gap: 03:00 CEST.
        assert_eq!(
            next("30 2 * * *", Berlin, before),
            "2026-03-29T01:00:00+00:00"
        );
        assert_eq!(
            runs("30 2 * * *", Berlin, before, 2),
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]
        );
        // 03:00 exists (it is the first minute of CEST).
        assert_eq!(
            next("0 3 * * *", Berlin, before),
            "2026-03-29T01:00:00+00:00"
        );
        // A job every 15 minutes runs once for the whole gap, then continues.
        assert_eq!(
            runs("*/15 * * * *", Berlin, "2026-03-29T00:40:00+00:00", 3),
            [
                "2026-03-29T00:45:00+00:00", // 01:45 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST
                "2026-03-29T01:15:00+00:00"
            ]
        );
    }

    #[test]
    fn dst_fall_back_in_berlin() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let before = "2026-10-24T22:00:00+00:00"; // 00:00 CEST
                                                  // It runs once, at the first pass (02:30 CEST = 00:30 UTC), not again at 02:30 CET.
        assert_eq!(
            runs("30 2 * * *", Berlin, before, 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // Asked during the second pass, the repeated time is not run again.
        assert_eq!(
            next("30 2 * * *", Berlin, "2026-10-25T01:10:00+00:00"),
            "2026-10-26T01:30:00+00:00"
        );
        // Never a time in the past.
        let now = utc("2026-10-25T01:10:00+00:00");
        let s = Schedule::new("*/15 * * * *", Berlin).expect("parses");
        assert!(s.next_after(now).expect("next") > now);
    }

    #[test]
    fn missed_runs() {
        let s = Schedule::new("0 3 * * *", UTC).expect("parses");
        let now = utc("2026-11-22T12:00:00+00:00");
        // Last run this morning at 03:00: nothing missed.
        assert!(!s.missed(Some(utc("2026-11-22T03:00:04+00:00")), now));
        // Last run yesterday: today's 03:00 was missed.
        assert!(s.missed(Some(utc("2026-11-21T03:00:04+00:00")), now));
        // Several missed: still one answer (the daemon runs once).
        assert!(s.missed(Some(utc("2026-11-01T03:00:00+00:00")), now));
        // Never ran.
        assert!(s.missed(None, now));
        // A last run in the future (clock skew) is not a miss.
        assert!(!s.missed(Some(utc("2026-11-23T05:00:00+00:00")), now));
        assert!(missed(
            "0 5 * * 0",
            UTC,
            Some(utc("2026-11-15T05:00:01+00:00")),
            now
        )
        .expect("ok"));
    }

    #[test]
    fn invalid_expressions_name_themselves() {
        for expr in [
            "",
            "0 3 * *",
            "0 3 * * * * *",
            "61 3 * * *",
            "0 25 * * *",
            "0 3 32 * *",
            "0 3 * 13 *",
            "0 3 * * 8",
            "0 3 * * funday",
            "0 3x * * *",
            "mon 3 * * *",
            "@fortnightly",
            "@reboot",
        ] {
            let e = err(expr);
            assert!(e.contains(&format!("`{expr}`")), "{expr}: {e}");
            assert!(!e.contains("hint:"), "{expr}: {e}");
            let hint = Schedule::new(expr, UTC).err().and_then(|e| e.hint());
            assert!(hint.is_some_and(|h| h.contains("5 fields")), "{expr}");
        }
        let e = Schedule::parse("0 3 * * *", "Mars/Olympus")
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("Mars/Olympus"));
    }
}
