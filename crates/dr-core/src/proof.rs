//! Every retained backup proven (`[verify] prove_within`): a backup is proven while its
//! newest trusted verification (for a base backup: its newest drill) passed within that
//! time. A scheduled `dr verify` without an id proves the backup whose last attempt is oldest
//! (never tried first, newest of those first), so the whole retained set is proven in turn;
//! `dr status` says how many are, and fails (exit 8) once one has gone unproven for longer
//! than `prove_within` since it was made. All pure.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::repo::BackupEntry;

/// Whether `e` has a passed proof no older than `within`.
pub fn proven(e: &BackupEntry, now: DateTime<Utc>, within: Duration) -> bool {
    e.verification
        .as_ref()
        .is_some_and(|v| v.passed() && now - v.verified_at <= within)
}

/// Unproven for longer than `within` since it was made: it had its whole time.
pub fn overdue(e: &BackupEntry, now: DateTime<Utc>, within: Duration) -> bool {
    !proven(e, now, within) && now - e.manifest.finished_at > within
}

/// The backups of a target that count: trusted, not dated in the future.
pub fn retained<'a>(
    entries: impl IntoIterator<Item = &'a BackupEntry>,
    target: &str,
    now: DateTime<Utc>,
) -> Vec<&'a BackupEntry> {
    entries
        .into_iter()
        .filter(|e| {
            e.manifest.target == target && e.trust.is_trusted() && e.manifest.finished_at <= now
        })
        .collect()
}

/// The next backup to prove: never tried ones first (the newest of them: it matters most in
/// an incident), then the one whose last attempt is oldest. A failed attempt counts as one,
/// so one bad backup does not starve the rest (status already says it failed).
pub fn pick<'a>(retained: &[&'a BackupEntry]) -> Option<&'a BackupEntry> {
    retained.iter().copied().min_by_key(|e| {
        let tried = e.verification.as_ref().map(|v| v.verified_at);
        // None sorts first; among the untried, the newest backup first.
        (tried, std::cmp::Reverse(e.manifest.started_at))
    })
}

/// `proven` of `dr status`: how many of a target's retained backups are proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proven {
    /// `prove_within` as configured (`30d`).
    pub within: String,
    pub proven: usize,
    pub retained: usize,
    /// Backups unproven for longer than `within` since they were made (a problem).
    pub overdue: Vec<String>,
}

pub fn summarize(
    retained: &[&BackupEntry],
    now: DateTime<Utc>,
    within: Duration,
    shown: &str,
) -> Proven {
    Proven {
        within: shown.to_string(),
        proven: retained.iter().filter(|e| proven(e, now, within)).count(),
        retained: retained.len(),
        overdue: retained
            .iter()
            .filter(|e| overdue(e, now, within))
            .map(|e| e.manifest.id.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, now, verified};

    fn day(n: i64) -> Duration {
        Duration::days(n)
    }

    fn made(id: &str, days_ago: i64) -> BackupEntry {
        let mut e = entry("app", id);
        e.manifest.started_at = now() - day(days_ago);
        e.manifest.finished_at = now() - day(days_ago);
        e
    }

    #[test]
    fn untried_backups_come_first_newest_first_then_the_oldest_attempt() {
        let a = verified(made("20261101T030000Z", 30), "passed", now() - day(20));
        let b = verified(made("20261110T030000Z", 20), "failed", now() - day(25));
        let c = made("20261120T030000Z", 10);
        let d = made("20261125T030000Z", 5);
        let all = [&a, &b, &c, &d];
        assert_eq!(pick(&all).map(|e| e.manifest.id), Some(d.manifest.id));
        let tried = [&a, &b];
        // b's failed attempt is older than a's pass.
        assert_eq!(pick(&tried).map(|e| e.manifest.id), Some(b.manifest.id));
        assert_eq!(pick(&[]).map(|e| e.manifest.id), None);
    }

    #[test]
    fn a_backup_is_overdue_only_once_it_had_the_whole_window() {
        let within = day(7);
        let fresh = made("20261125T030000Z", 2);
        let old = made("20261101T030000Z", 30);
        let proven_once = verified(made("20261102T030000Z", 29), "passed", now() - day(3));
        let proven_long_ago = verified(made("20261103T030000Z", 28), "passed", now() - day(8));
        let failed = verified(made("20261104T030000Z", 27), "failed", now() - day(1));
        assert!(!overdue(&fresh, now(), within));
        assert!(overdue(&old, now(), within));
        assert!(proven(&proven_once, now(), within));
        assert!(overdue(&proven_long_ago, now(), within));
        assert!(overdue(&failed, now(), within));
        let all = [&fresh, &old, &proven_once, &proven_long_ago, &failed];
        let s = summarize(&all, now(), within, "7d");
        assert_eq!((s.proven, s.retained), (1, 5));
        assert_eq!(s.overdue.len(), 3);
    }
}
