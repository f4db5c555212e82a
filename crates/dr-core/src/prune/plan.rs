//! What `dr prune` decides for one target, and reports: the report types, which damaged
//! backups are kept, which objects are leftovers of failed backups. Pure: nothing here talks
//! to the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_catalog::manifest::BackupKind;
use dr_catalog::{keys, BackupId, Decision};
use serde::Serialize;

use crate::repo::DamagedBackup;

/// Every object key (and its time) per (target, backup id).
pub(super) type ObjectsByBackup =
    BTreeMap<(String, BackupId), Vec<(String, Option<DateTime<Utc>>)>>;

#[derive(Debug, Clone, Serialize)]
pub struct TargetPrune {
    pub target: String,
    pub decisions: Vec<Decision>,
    pub leftovers: Vec<String>,
    pub stale_uploads: Vec<String>,
    /// Backups with a manifest that cannot be used: kept unless `--force`.
    pub damaged: Vec<DamagedPrune>,
    /// What prune would delete but Object Lock still protects: kept whole, removed by a later
    /// prune once `until` has passed.
    pub locked: Vec<LockedPrune>,
    /// Kept backups whose lock was extended (with `[repository.object_lock]`).
    pub lock_extended: Vec<LockExtended>,
    /// The target's WAL archive; `None` when the repository holds no WAL for it.
    pub wal: Option<super::wal::WalPruneReport>,
}

/// A backup, damaged backup or leftover that is locked: kept for now.
#[derive(Debug, Clone, Serialize)]
pub struct LockedPrune {
    pub id: BackupId,
    /// `backup`, `damaged` or `leftover`.
    pub what: &'static str,
    /// The latest retain-until date among its versions.
    pub until: DateTime<Utc>,
}

/// A kept backup whose objects' lock now lasts until `until`.
#[derive(Debug, Clone, Serialize)]
pub struct LockExtended {
    pub id: BackupId,
    pub until: DateTime<Utc>,
    /// Object versions whose retention was extended.
    pub versions: usize,
}

/// What happens to one damaged backup.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPrune {
    pub id: BackupId,
    /// The manifest's key.
    pub key: String,
    pub reason: String,
    /// False only with `--force`: then its manifest and every object under it are deleted.
    pub keep: bool,
}

/// The retention decisions for `target`'s trusted complete backups (untrusted ones never hold
/// a tier, so they never shadow a trusted backup), one policy per kind:
/// logical backups and physical base backups each get every tier (and each kind's newest is
/// kept). Together, a nightly dump would take the daily slot of the base backup taken the
/// same night, and with it the recoverable window. Newest first.
pub(crate) fn decisions(
    entries: &[crate::repo::BackupEntry],
    target: &str,
    policy: &dr_catalog::Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Decision> {
    let mut out = Vec::new();
    for physical in [false, true] {
        let of_kind: Vec<(dr_catalog::BackupId, bool)> = entries
            .iter()
            .filter(|e| e.manifest.target == target && e.trust.is_trusted())
            .filter(|e| (e.manifest.kind == BackupKind::Physical) == physical)
            .map(|e| {
                (
                    e.manifest.id,
                    e.verification.as_ref().is_some_and(|v| v.passed()),
                )
            })
            .collect();
        out.extend(dr_catalog::retention_plan(&of_kind, policy, now));
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.id));
    out
}

/// Damaged backups of `target`: kept (and reported) unless `force`.
pub(super) fn damaged_plan(
    damaged: &[DamagedBackup],
    target: &str,
    force: bool,
) -> Vec<DamagedPrune> {
    damaged
        .iter()
        .filter(|d| d.target == target)
        .map(|d| {
            if !force {
                tracing::warn!(
                    "backup {} of `{target}` is damaged ({}): kept; `dr prune --force` deletes it",
                    d.id,
                    d.reason
                );
            }
            DamagedPrune {
                id: d.id,
                key: d.key.clone(),
                reason: d.reason.clone(),
                keep: !force,
            }
        })
        .collect()
}

/// Keys of `target`'s backups that never got a manifest and whose every object is older than
/// `grace`: leftovers of failed backups. A prefix holding a manifest object, readable or not,
/// is never a leftover. Pure.
pub(super) fn leftovers(
    by_backup: &ObjectsByBackup,
    target: &str,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> Vec<String> {
    by_backup
        .iter()
        .filter(|((bt, _), objs)| {
            bt == target
                && !objs
                    .iter()
                    .any(|(k, _)| keys::parse(k).is_some_and(|(_, _, rest)| rest == keys::MANIFEST))
                && objs
                    .iter()
                    .all(|(_, m)| m.is_some_and(|m| now - m >= grace))
        })
        .flat_map(|(_, objs)| objs.iter().map(|(k, _)| k.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse::<BackupId>().expect("id").time()
    }

    fn objects(list: &[(&str, &str)]) -> ObjectsByBackup {
        let mut m = ObjectsByBackup::new();
        for (key, at) in list {
            let (target, id, _) = keys::parse(key).expect("key");
            m.entry((target.to_string(), id))
                .or_default()
                .push(((*key).to_string(), Some(t(at))));
        }
        m
    }

    #[test]
    fn a_prefix_with_a_manifest_is_never_a_leftover() {
        let by = objects(&[
            // Failed backup, old: a leftover.
            ("app/20261101T030000Z/dump.zst.age", "20261101T030000Z"),
            // Damaged manifest, old: not a leftover.
            ("app/20261102T030000Z/dump.zst.age", "20261102T030000Z"),
            ("app/20261102T030000Z/manifest.json", "20261102T030000Z"),
            // Failed backup, too recent: may be running.
            ("app/20261121T030000Z/dump.zst.age", "20261121T030000Z"),
            // Another target.
            ("db/20261101T030000Z/dump.zst.age", "20261101T030000Z"),
        ]);
        let got = leftovers(
            &by,
            "app",
            chrono::Duration::hours(24),
            t("20261121T120000Z"),
        );
        assert_eq!(got, vec!["app/20261101T030000Z/dump.zst.age".to_string()]);
    }

    #[test]
    fn damaged_backups_are_kept_unless_forced() {
        let d = vec![
            DamagedBackup {
                target: "app".into(),
                id: "20261102T030000Z".parse().expect("id"),
                key: "app/20261102T030000Z/manifest.json".into(),
                reason: "not valid JSON".into(),
            },
            DamagedBackup {
                target: "db".into(),
                id: "20261102T030000Z".parse().expect("id"),
                key: "db/20261102T030000Z/manifest.json".into(),
                reason: "not valid JSON".into(),
            },
        ];
        let kept = damaged_plan(&d, "app", false);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].keep);
        let forced = damaged_plan(&d, "app", true);
        assert!(!forced[0].keep);
    }
    #[test]
    fn logical_and_physical_backups_are_kept_by_tiers_of_their_own() {
        use crate::testing::{entry, now, physical};
        // Every night a base backup at 02:30 and a dump at 03:00; daily = 2.
        let mut entries = Vec::new();
        for day in ["20261119", "20261120", "20261121"] {
            entries.push(physical(
                "app",
                &format!("{day}T023000Z"),
                "0/3000028",
                "0/3000100",
            ));
            entries.push(entry("app", &format!("{day}T030000Z")));
        }
        let policy = dr_catalog::Policy {
            daily: 2,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            timezone: chrono_tz::UTC,
        };
        let kept: Vec<String> = decisions(&entries, "app", &policy, now())
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.to_string())
            .collect();
        assert_eq!(
            kept,
            [
                "20261121T030000Z",
                "20261121T023000Z",
                "20261120T030000Z",
                "20261120T023000Z"
            ]
        );
    }
}
