//! `dr prune`: apply grandfather-father-son retention, then remove the leftovers of failed
//! backups (objects without a manifest, older than a grace period) and stale multipart uploads.
//!
//! Deletion order keeps the repository consistent: a backup's manifest goes first, so a
//! half-deleted backup is never listed as complete; then its objects. A listing that fails is
//! never acted on. The target's run lock is held so a backup in progress is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, retention_plan, BackupId, Decision, Policy};
use serde::Serialize;

use crate::lock::RunLock;
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

/// Plan (and unless `dry_run`, apply) retention for the selected targets.
pub async fn run(
    ctx: &Context,
    target: Option<&str>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Vec<TargetPrune>> {
    let policy = policy(ctx)?;
    let store = ctx.store.as_ref();
    let entries = crate::repo::list(store, target).await?;
    let objects = store
        .list(target.map(|t| format!("{t}/")).as_deref().unwrap_or(""))
        .await
        .map_err(|e| Error::from(e).context("listing the repository (nothing was deleted)"))?;
    let mut targets: BTreeSet<String> = entries.iter().map(|e| e.manifest.target.clone()).collect();
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
        let complete: Vec<(BackupId, bool)> = entries
            .iter()
            .filter(|e| e.manifest.target == t)
            .map(|e| {
                (
                    e.manifest.id,
                    e.verification.as_ref().is_some_and(|v| v.passed()),
                )
            })
            .collect();
        let decisions = retention_plan(&complete, &policy, now);
        let complete_ids: BTreeSet<BackupId> = complete.iter().map(|(id, _)| *id).collect();
        let leftovers: Vec<String> = by_backup
            .iter()
            .filter(|((bt, id), objs)| {
                *bt == t
                    && !complete_ids.contains(id)
                    && objs
                        .iter()
                        .all(|(_, m)| m.is_some_and(|m| now - m >= grace))
            })
            .flat_map(|(_, objs)| objs.iter().map(|(k, _)| k.clone()))
            .collect();
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
