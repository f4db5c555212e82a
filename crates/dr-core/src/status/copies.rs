//! `dr status` per copy repository (`[[copies]]`): for each target, the newest backup and
//! the newest proof (a passed, trusted verification) in the copy, and how far the copy is
//! behind the primary (backups it lacks, and the time between the newest backups).
//! [`assess`] is pure; [`attach`] reads each copy.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::repo::Catalog;
use crate::Context;

/// An element of `copies` in a [`super::TargetStatus`] (docs/JSON.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyStatus {
    /// The copy's name.
    pub copy: String,
    /// The newest trusted backup in the copy.
    pub newest_backup: Option<String>,
    /// Seconds since it finished.
    pub newest_backup_age_seconds: Option<i64>,
    /// When the newest passed verification in the copy ran (RFC 3339), and of which backup.
    pub newest_proof: Option<String>,
    pub newest_proof_backup: Option<String>,
    /// Trusted backups of the primary (not future-dated) the copy lacks.
    pub missing: usize,
    /// Seconds between the primary's newest backup and the copy's (0: the copy has it).
    pub lag_seconds: Option<i64>,
    /// The copy could not be read: why (then the other fields are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The copy `name`'s view of `target` at `now`, from the primary's catalog and the copy's.
/// Pure.
pub fn assess(
    name: &str,
    target: &str,
    primary: &Catalog,
    copy: &Catalog,
    now: DateTime<Utc>,
) -> CopyStatus {
    let theirs: Vec<_> = copy
        .current(now)
        .filter(|e| e.manifest.target == target)
        .collect();
    let ours: Vec<_> = primary
        .current(now)
        .filter(|e| e.manifest.target == target)
        .collect();
    let newest = theirs.first();
    let proof = theirs.iter().find_map(|e| {
        e.verification
            .as_ref()
            .filter(|v| v.passed())
            .map(|v| (v.verified_at, e.manifest.id))
    });
    let missing = ours
        .iter()
        .filter(|o| !theirs.iter().any(|t| t.manifest.id == o.manifest.id))
        .count();
    let lag_seconds = ours.first().map(|o| match newest {
        Some(t) => (o.manifest.finished_at - t.manifest.finished_at)
            .num_seconds()
            .max(0),
        None => (now - o.manifest.started_at).num_seconds().max(0),
    });
    CopyStatus {
        copy: name.to_string(),
        newest_backup: newest.map(|e| e.manifest.id.to_string()),
        newest_backup_age_seconds: newest.map(|e| (now - e.manifest.finished_at).num_seconds()),
        newest_proof: proof.map(|(at, _)| crate::time::format(at)),
        newest_proof_backup: proof.map(|(_, id)| id.to_string()),
        missing,
        lag_seconds,
        error: None,
    }
}

/// The problem line of a copy, if any: unreadable, or behind by more than `max_age`.
fn problem(s: &CopyStatus, max_age: Duration) -> Option<String> {
    if let Some(e) = &s.error {
        return Some(format!("copy `{}` cannot be read: {e}", s.copy));
    }
    let behind = s.lag_seconds.unwrap_or(0);
    (s.missing > 0 && behind > max_age.num_seconds()).then(|| {
        format!(
            "copy `{}` lacks {} backup(s) and is {}h behind the primary: run `dr copy --to {}` (or schedule job = \"copy\")",
            s.copy,
            s.missing,
            behind / 3600,
            s.copy
        )
    })
}

/// Read every copy and add its view to each row; a copy behind by more than `max_age`, or
/// that cannot be read, is a problem of the row.
pub async fn attach(
    ctx: &Context,
    primary: &Catalog,
    rows: &mut [super::TargetStatus],
    max_age: Duration,
    now: DateTime<Utc>,
) {
    for copy in &ctx.config.copies {
        let read = async {
            let config = ctx.config.for_copy(&copy.name)?;
            let store = crate::open_repository(&config).await?;
            crate::repo::catalog(store.as_ref(), None, &ctx.signing).await
        }
        .await;
        for r in rows.iter_mut() {
            let s = match &read {
                Ok(catalog) => assess(&copy.name, &r.target, primary, catalog, now),
                Err(e) => CopyStatus {
                    copy: copy.name.clone(),
                    newest_backup: None,
                    newest_backup_age_seconds: None,
                    newest_proof: None,
                    newest_proof_backup: None,
                    missing: 0,
                    lag_seconds: None,
                    error: Some(e.message.clone()),
                },
            };
            if let Some(p) = problem(&s, max_age) {
                r.problems.push(p);
                r.ok = false;
            }
            r.copies.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, now, verified};

    fn catalog(entries: Vec<crate::repo::BackupEntry>) -> Catalog {
        Catalog {
            entries,
            damaged: Vec::new(),
        }
    }

    #[test]
    fn a_copy_shows_its_newest_backup_proof_and_how_far_behind_it_is() {
        let primary = catalog(vec![
            entry("app", "20261122T010000Z"),
            entry("app", "20261121T010000Z"),
            entry("app", "20261120T010000Z"),
        ]);
        let at = "20261121T050000Z"
            .parse::<dr_catalog::BackupId>()
            .expect("id")
            .time();
        let copy = catalog(vec![
            verified(entry("app", "20261121T010000Z"), "passed", at),
            entry("app", "20261120T010000Z"),
        ]);
        let s = assess("off", "app", &primary, &copy, now());
        assert_eq!(s.newest_backup.as_deref(), Some("20261121T010000Z"));
        assert_eq!(s.newest_proof_backup.as_deref(), Some("20261121T010000Z"));
        assert_eq!(s.missing, 1);
        assert_eq!(s.lag_seconds, Some(24 * 3600));
        assert_eq!(problem(&s, Duration::hours(26)), None);
        let p = problem(&s, Duration::hours(1)).expect("behind");
        assert!(p.contains("dr copy --to off"), "{p}");

        let empty = assess("off", "app", &primary, &catalog(vec![]), now());
        assert_eq!(empty.newest_backup, None);
        assert_eq!(empty.missing, 3);
        let same = assess("off", "app", &primary, &primary, now());
        assert_eq!((same.missing, same.lag_seconds), (0, Some(0)));
        assert_eq!(problem(&same, Duration::hours(1)), None);
    }
}
