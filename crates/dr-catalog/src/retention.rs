//! Grandfather-father-son retention, evaluated on the backups' own times in a time zone.
//!
//! Pure: takes the backups, the policy and `now`; returns a decision per backup. A backup kept
//! by any tier survives. On top of the tiers, hard rules: the newest backup, the newest verified
//! backup and any future-dated backup (clock skew, see [`BackupId::is_future_dated`]) are always
//! kept.
//!
//! Future-dated backups are set aside before the tiers are counted: a backup taken with the
//! clock 30 days ahead is neither "the newest" nor the first daily, so it cannot push the real
//! newest backups out of their tiers. It is not deleted either: its data may well be the newest
//! there is (the clock was wrong, not the dump), and deleting it silently would lose that. It is
//! kept with [`Tier::Future`], which `dr list`, `dr prune`, `dr status` and `dr check` report;
//! once `now` passes its time it is an ordinary backup and ages out through the tiers.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::BackupId;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub timezone: Tz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The newest complete backup is never deleted.
    Newest,
    /// The newest verified backup is never deleted.
    NewestVerified,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// Future-dated (its time is beyond `now` plus the clock-skew allowance): kept, and
    /// reported; never counted by the other tiers.
    Future,
}

impl Tier {
    pub const ALL: [Tier; 7] = [
        Tier::Newest,
        Tier::NewestVerified,
        Tier::Daily,
        Tier::Weekly,
        Tier::Monthly,
        Tier::Yearly,
        Tier::Future,
    ];

    /// The name in JSON output (`newest_verified`), the same as its serde form, for JSON
    /// fields that carry tiers inside a string (`dr list`'s `retention`).
    pub fn json_name(self) -> &'static str {
        match self {
            Tier::NewestVerified => "newest_verified",
            other => other.human_name(),
        }
    }

    fn human_name(self) -> &'static str {
        match self {
            Tier::Newest => "newest",
            Tier::NewestVerified => "newest-verified",
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
            Tier::Yearly => "yearly",
            Tier::Future => "future",
        }
    }
}

/// The human form (`newest-verified`).
impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.human_name())
    }
}

/// What to do with one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: BackupId,
    pub keep: bool,
    /// Why it is kept; empty when deleted.
    pub tiers: Vec<Tier>,
}

/// Maps a local time to its day/week/month/year bucket.
type BucketOf = dyn Fn(DateTime<Tz>) -> i64;

/// `backups`: (id, whether its latest verification passed). Returns decisions newest first.
pub fn plan(backups: &[(BackupId, bool)], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut sorted: Vec<(BackupId, bool)> = backups.to_vec();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut tiers: Vec<BTreeSet<Tier>> = vec![BTreeSet::new(); sorted.len()];

    let past: Vec<usize> = (0..sorted.len())
        .filter(|&i| !sorted[i].0.is_future_dated(now))
        .collect();
    for (i, (id, _)) in sorted.iter().enumerate() {
        if id.is_future_dated(now) {
            tiers[i].insert(Tier::Future);
        }
    }
    if let Some(&i) = past.first() {
        tiers[i].insert(Tier::Newest);
    }
    if let Some(&i) = past.iter().find(|&&i| sorted[i].1) {
        tiers[i].insert(Tier::NewestVerified);
    }

    let tz = policy.timezone;
    let buckets: [(Tier, u32, &BucketOf); 4] = [
        (Tier::Daily, policy.daily, &|t| {
            i64::from(t.year()) * 1000 + i64::from(t.ordinal())
        }),
        (Tier::Weekly, policy.weekly, &|t| {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }),
        (Tier::Monthly, policy.monthly, &|t| {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }),
        (Tier::Yearly, policy.yearly, &|t| i64::from(t.year())),
    ];
    for (tier, count, bucket_of) in buckets {
        let mut seen: Option<i64> = None;
        let mut kept = 0;
        for &i in &past {
            if kept >= count {
                break;
            }
            let b = bucket_of(sorted[i].0.time().with_timezone(&tz));
            if seen != Some(b) {
                seen = Some(b);
                tiers[i].insert(tier);
                kept += 1;
            }
        }
    }

    sorted
        .iter()
        .zip(tiers)
        .map(|((id, _), t)| Decision {
            id: *id,
            keep: !t.is_empty(),
            tiers: t.into_iter().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn id(s: &str) -> BackupId {
        BackupId::from_time(
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
                .expect("time")
                .and_utc(),
        )
    }

    fn policy(d: u32, w: u32, m: u32, y: u32) -> Policy {
        Policy {
            daily: d,
            weekly: w,
            monthly: m,
            yearly: y,
            timezone: chrono_tz::UTC,
        }
    }

    fn kept(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.to_string())
            .collect()
    }

    fn daily_series(start: &str, days: i64) -> Vec<(BackupId, bool)> {
        let s = id(start).time();
        (0..days)
            .map(|d| (BackupId::from_time(s + Duration::days(d)), false))
            .collect()
    }

    #[test]
    fn keeps_newest_of_each_of_the_last_days() {
        let b = daily_series("2026-11-01 03:00", 20);
        let now = id("2026-11-21 00:00").time();
        let d = plan(&b, &policy(7, 0, 0, 0), now);
        assert_eq!(kept(&d).len(), 7);
        assert_eq!(kept(&d)[0], "20261120T030000Z");
        assert_eq!(kept(&d)[6], "20261114T030000Z");
    }

    #[test]
    fn several_backups_a_day_keep_the_newest_of_the_day() {
        let b = vec![
            (id("2026-11-20 01:00"), false),
            (id("2026-11-20 13:00"), false),
            (id("2026-11-19 13:00"), false),
            (id("2026-11-19 01:00"), false),
        ];
        let d = plan(&b, &policy(2, 0, 0, 0), id("2026-11-21 00:00").time());
        assert_eq!(kept(&d), vec!["20261120T130000Z", "20261119T130000Z"]);
    }

    #[test]
    fn gaps_count_days_that_have_backups() {
        let b = vec![
            (id("2026-11-20 03:00"), false),
            (id("2026-10-01 03:00"), false),
            (id("2026-09-01 03:00"), false),
        ];
        let d = plan(&b, &policy(3, 0, 0, 0), id("2026-11-21 00:00").time());
        assert_eq!(kept(&d).len(), 3);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_end() {
        // 2026-12-28 (Mon) .. 2027-01-03 (Sun) are ISO week 2026-W53.
        let b = daily_series("2026-12-21 03:00", 21);
        let d = plan(&b, &policy(0, 3, 0, 0), id("2027-01-11 00:00").time());
        assert_eq!(
            kept(&d),
            vec!["20270110T030000Z", "20270103T030000Z", "20261227T030000Z"]
        );
    }

    #[test]
    fn monthly_handles_month_ends_and_leap_days() {
        let b = vec![
            (id("2028-03-01 00:30"), false),
            (id("2028-02-29 23:30"), false),
            (id("2028-02-28 23:30"), false),
            (id("2028-01-31 23:59"), false),
        ];
        let d = plan(&b, &policy(0, 0, 3, 0), id("2028-03-02 00:00").time());
        assert_eq!(
            kept(&d),
            vec!["20280301T003000Z", "20280229T233000Z", "20280131T235900Z"]
        );
    }

    #[test]
    fn days_are_counted_in_the_configured_time_zone() {
        // 23:30 UTC on the 19th is already the 20th in Berlin.
        let b = vec![
            (id("2026-11-20 10:00"), false),
            (id("2026-11-19 23:30"), false),
        ];
        let mut p = policy(2, 0, 0, 0);
        assert_eq!(kept(&plan(&b, &p, id("2026-11-21 00:00").time())).len(), 2);
        p.timezone = chrono_tz::Europe::Berlin;
        p.daily = 1;
        let d = plan(&b, &p, id("2026-11-21 00:00").time());
        assert_eq!(kept(&d), vec!["20261120T100000Z"]);
    }

    #[test]
    fn dst_change_day_is_one_day() {
        // Europe/Berlin leaves DST on 2026-10-25: 25 hours that day.
        let b = vec![
            (id("2026-10-25 22:30"), false), // 23:30 local, the 25th
            (id("2026-10-24 22:30"), false), // 00:30 local, the 25th
        ];
        let mut p = policy(2, 0, 0, 0);
        p.timezone = chrono_tz::Europe::Berlin;
        let d = plan(&b, &p, id("2026-10-27 00:00").time());
        assert_eq!(kept(&d), vec!["20261025T223000Z"]);
    }

    #[test]
    fn newest_and_newest_verified_always_survive() {
        let b = vec![
            (id("2026-11-20 03:00"), false),
            (id("2026-01-01 03:00"), true),
            (id("2025-01-01 03:00"), false),
        ];
        let d = plan(&b, &policy(0, 0, 0, 0), id("2026-11-21 00:00").time());
        assert_eq!(d[0].tiers, vec![Tier::Newest]);
        assert_eq!(d[1].tiers, vec![Tier::NewestVerified]);
        assert!(!d[2].keep);
    }

    #[test]
    fn a_backup_from_the_future_is_kept_and_not_the_newest() {
        let b = vec![
            (id("2030-01-01 00:00"), false),
            (id("2026-11-20 03:00"), false),
        ];
        let d = plan(&b, &policy(1, 0, 0, 0), id("2026-11-21 00:00").time());
        assert_eq!(d[0].tiers, vec![Tier::Future]);
        assert_eq!(d[1].tiers, vec![Tier::Newest, Tier::Daily]);
    }

    #[test]
    fn a_future_dated_backup_does_not_push_the_real_newest_out_of_their_tiers() {
        // Taken with the clock 30 days ahead, between two nightly backups.
        let b = vec![
            (id("2026-12-21 03:00"), false),
            (id("2026-11-21 03:00"), false),
            (id("2026-11-20 03:00"), false),
            (id("2026-11-19 03:00"), false),
        ];
        let d = plan(&b, &policy(2, 0, 0, 0), id("2026-11-21 09:00").time());
        assert_eq!(d[0].tiers, vec![Tier::Future]);
        assert_eq!(d[1].tiers, vec![Tier::Newest, Tier::Daily]);
        assert_eq!(d[2].tiers, vec![Tier::Daily]);
        assert!(!d[3].keep);
    }

    #[test]
    fn a_few_minutes_ahead_is_drift_not_skew() {
        // The backup host's clock is 2 minutes ahead of the host running prune.
        let b = vec![
            (id("2026-11-21 09:02"), false),
            (id("2026-11-20 03:00"), false),
        ];
        let d = plan(&b, &policy(1, 0, 0, 0), id("2026-11-21 09:00").time());
        assert_eq!(d[0].tiers, vec![Tier::Newest, Tier::Daily]);
        assert!(!d[1].keep);
    }

    #[test]
    fn only_future_dated_backups_are_all_kept_and_none_is_newest() {
        let b = vec![
            (id("2027-01-02 03:00"), true),
            (id("2027-01-01 03:00"), false),
        ];
        let d = plan(&b, &policy(1, 1, 1, 1), id("2026-11-21 09:00").time());
        assert!(d.iter().all(|x| x.keep && x.tiers == vec![Tier::Future]));
    }

    #[test]
    fn property_over_a_long_irregular_calendar() {
        // Backups at irregular times over three years: invariants must hold for every `now`.
        let start = chrono::Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .expect("t");
        let mut b = Vec::new();
        let mut t = start;
        let mut step = 0i64;
        while t < start + Duration::days(3 * 366) {
            step = (step * 7919 + 13) % 97; // deterministic pseudo-random hours
            t += Duration::hours(1 + step);
            b.push((BackupId::from_time(t), step % 11 == 0));
        }
        let p = policy(7, 4, 12, 2);
        for now_days in (30..1000).step_by(37) {
            let now = start + Duration::days(now_days);
            let d = plan(&b, &p, now);
            let kept_past: Vec<&Decision> = d
                .iter()
                .filter(|x| x.keep && !x.id.is_future_dated(now))
                .collect();
            // Bounded: never more than the tiers plus the two hard rules.
            assert!(kept_past.len() <= 7 + 4 + 12 + 2 + 2);
            // The newest past backup is kept.
            let newest = d
                .iter()
                .find(|x| !x.id.is_future_dated(now))
                .expect("some past");
            assert!(newest.keep);
            // Everything in the future is kept.
            assert!(d
                .iter()
                .filter(|x| x.id.is_future_dated(now))
                .all(|x| x.keep));
            // Daily keeps exactly min(7, distinct days) backups.
            let days: BTreeSet<_> = b
                .iter()
                .filter(|x| !x.0.is_future_dated(now))
                .map(|x| x.0.time().date_naive())
                .collect();
            let daily = d.iter().filter(|x| x.tiers.contains(&Tier::Daily)).count();
            assert_eq!(daily, days.len().min(7));
        }
    }

    #[test]
    fn json_names_are_the_serde_names() {
        for t in Tier::ALL {
            assert_eq!(
                serde_json::to_value(t).expect("json"),
                serde_json::Value::from(t.json_name())
            );
        }
    }
}
