//! `dr prune`: apply grandfather-father-son retention, then remove the leftovers of failed
//! backups (objects without a manifest, older than a grace period) and stale multipart uploads.
//!
//! A damaged backup (its manifest exists but cannot be read, see [`crate::repo`]) is neither
//! counted by retention nor a leftover: a backup whose prefix holds a manifest object at all is
//! never removed as a leftover, because a manifest this dr cannot parse may be a newer dr's, or
//! the only copy of data someone can still repair by hand. It is kept and reported until the
//! operator runs `dr prune --force`, which deletes it like a leftover. Future-dated backups
//! (clock skew) are kept and reported, see [`dr_catalog::retention`].
//!
//! Deletion order keeps the repository consistent: a backup's manifest goes first, so a
//! half-deleted backup is never listed as complete; then its objects. A listing that fails is
//! never acted on. The target's run lock is held so a backup in progress is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, retention_plan, BackupId, Decision, Policy, Tier};
use serde::Serialize;

use crate::lock::RunLock;
use crate::repo::DamagedBackup;
use crate::{Context, Error, Result};

/// Every object key (and its time) per (target, backup id).
type ObjectsByBackup = BTreeMap<(String, BackupId), Vec<(String, Option<DateTime<Utc>>)>>;

/// Objects of a backup without a manifest younger than this may belong to a running backup.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize)]
pub struct TargetPrune {
    pub target: String,
    pub decisions: Vec<Decision>,
    pub leftovers: Vec<String>,
    pub stale_uploads: Vec<String>,
    /// Backups with a manifest that cannot be used: kept unless `--force`.
    pub damaged: Vec<DamagedPrune>,
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

pub fn policy(ctx: &Context) -> Result<Policy> {
    let r = &ctx.config.retention;
    if !r.is_configured() {
        return Err(Error::config(
            "no retention is configured: prune would keep only the newest backup\nhint: add a [retention] section, e.g. daily = 7, weekly = 4, monthly = 12",
        ));
    }
    let timezone = match &r.timezone {
        Some(tz) => tz
            .parse()
            .map_err(|_| Error::config(format!("bad retention.timezone `{tz}`")))?,
        None => chrono_tz::UTC,
    };
    Ok(Policy {
        daily: r.daily,
        weekly: r.weekly,
        monthly: r.monthly,
        yearly: r.yearly,
        timezone,
    })
}

/// Plan (and unless `dry_run`, apply) retention for the selected targets. `force` also
/// deletes damaged backups.
pub async fn run(
    ctx: &Context,
    target: Option<&str>,
    dry_run: bool,
    force: bool,
    now: DateTime<Utc>,
) -> Result<Vec<TargetPrune>> {
    let policy = policy(ctx)?;
    let store = ctx.store.as_ref();
    let catalog = crate::repo::catalog(store, target).await?;
    let entries = &catalog.entries;
    let objects = store
        .list(target.map(|t| format!("{t}/")).as_deref().unwrap_or(""))
        .await
        .map_err(|e| Error::from(e).context("listing the repository (nothing was deleted)"))?;
    let mut targets: BTreeSet<String> = entries.iter().map(|e| e.manifest.target.clone()).collect();
    targets.extend(catalog.damaged.iter().map(|d| d.target.clone()));
    let mut by_backup: ObjectsByBackup = BTreeMap::new();
    for o in &objects {
        if let Some((t, id, _)) = keys::parse(&o.key) {
            targets.insert(t.to_string());
            by_backup
                .entry((t.to_string(), id))
                .or_default()
                .push((o.key.clone(), o.last_modified));
        }
    }
    let grace = match ctx.config.retention.leftover_grace_hours {
        Some(h) => chrono::Duration::hours(i64::try_from(h).unwrap_or(24)),
        None => chrono::Duration::from_std(LEFTOVER_GRACE).unwrap_or(chrono::Duration::hours(24)),
    };
    let mut out = Vec::new();
    for t in targets {
        if let Some(only) = target {
            if only != t {
                continue;
            }
        }
        let complete = crate::repo::retention_inputs(entries, &t);
        let decisions = retention_plan(&complete, &policy, now);
        for d in decisions.iter().filter(|d| d.tiers.contains(&Tier::Future)) {
            tracing::warn!(
                "backup {} of `{t}` is dated in the future (clock skew on the host that took it?): kept, and not counted as the newest",
                d.id
            );
        }
        let damaged = damaged_plan(&catalog.damaged, &t, force);
        let leftovers = leftovers(&by_backup, &t, grace, now);
        let uploads = store.list_multipart(&format!("{t}/")).await?;
        let stale: Vec<dr_store::PendingUpload> = uploads
            .into_iter()
            .filter(|u| u.initiated.is_some_and(|i| now - i >= grace))
            .collect();
        let mut report = TargetPrune {
            target: t.clone(),
            decisions,
            leftovers,
            stale_uploads: stale.iter().map(|u| u.key.clone()).collect(),
            damaged,
        };
        if !dry_run {
            let lock = RunLock::acquire(
                Arc::clone(&ctx.store),
                &t,
                "prune",
                Duration::from_secs(ctx.config.lock.ttl_secs),
                Duration::from_secs(ctx.config.lock.wait_secs),
                &ctx.cancel,
            )
            .await?;
            let r = apply(ctx, &t, &mut report, &by_backup, &stale).await;
            lock.release().await;
            r?;
        }
        out.push(report);
    }
    Ok(out)
}

/// Damaged backups of `target`: kept (and reported) unless `force`.
fn damaged_plan(damaged: &[DamagedBackup], target: &str, force: bool) -> Vec<DamagedPrune> {
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
fn leftovers(
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

async fn apply(
    ctx: &Context,
    target: &str,
    report: &mut TargetPrune,
    by_backup: &ObjectsByBackup,
    stale: &[dr_store::PendingUpload],
) -> Result<()> {
    let store = ctx.store.as_ref();
    for d in report.decisions.iter().filter(|d| !d.keep) {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("prune"));
        }
        // Manifest first: from here on the backup is no longer complete, never listed.
        store
            .delete(&keys::manifest(target, &d.id))
            .await
            .map_err(|e| Error::from(e).context(format!("deleting backup {}", d.id)))?;
        for (k, _) in by_backup
            .get(&(target.to_string(), d.id))
            .into_iter()
            .flatten()
        {
            if !k.ends_with(keys::MANIFEST) {
                store.delete(k).await?;
            }
        }
        tracing::info!(target, id = %d.id, "backup deleted");
    }
    for d in report.damaged.iter().filter(|d| !d.keep) {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("prune"));
        }
        // Manifest first, as for any backup.
        store
            .delete(&d.key)
            .await
            .map_err(|e| Error::from(e).context(format!("deleting damaged backup {}", d.id)))?;
        for (k, _) in by_backup
            .get(&(target.to_string(), d.id))
            .into_iter()
            .flatten()
        {
            if *k != d.key {
                store.delete(k).await?;
            }
        }
        tracing::info!(target, id = %d.id, "damaged backup deleted (--force)");
    }
    for k in &report.leftovers {
        store.delete(k).await?;
    }
    for u in stale {
        if let Err(e) = store.abort_multipart(u).await {
            tracing::warn!("could not abort stale upload of {}: {e}", u.key);
        }
    }
    Ok(())
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
}
