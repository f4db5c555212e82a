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
//!
//! On a versioned bucket (always so with Object Lock) deleting means deleting every version
//! and delete marker of the backup's objects: a plain DELETE only adds a delete marker, and
//! the bucket would go on paying for what prune removed. Object Lock is respected, never
//! fought: a backup (or leftover) with any version still locked is left whole and reported
//! "locked until …" (exit 0); a later prune removes it once the lock has expired. With
//! `[repository.object_lock]`, prune also extends the lock of every backup it keeps, see
//! [`lock_horizon`]. A backup whose manifest is hidden by a delete marker (an attacker's
//! DELETE) is never a leftover: `dr undelete` brings it back.
//!
//! The report types and the pure planning are in `plan`; everything about versions and
//! Object Lock is in `object_lock`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId, Policy, Tier};

use crate::lock::RunLock;
use crate::{Context, Error, Result};

mod object_lock;
pub(crate) mod plan;
mod wal;

pub use self::object_lock::lock_horizon;
use self::object_lock::{extend_locks, hold_locked, purge_backup, versioned};
use self::plan::{damaged_plan, leftovers, ObjectsByBackup};
pub use self::plan::{DamagedPrune, LockExtended, LockedPrune, TargetPrune};
pub use self::wal::{WalLocked, WalPruneReport, WalRange};

/// Objects of a backup without a manifest younger than this may belong to a running backup.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(24 * 3600);

pub fn policy(ctx: &Context) -> Result<Policy> {
    let r = &ctx.config.retention;
    if !r.is_configured() {
        return Err(Error::config(
            "no retention is configured: prune would keep only the newest backup",
        )
        .with_hint("add a [retention] section, e.g. daily = 7, weekly = 4, monthly = 12"));
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
    // A `databases = "all"` target: each of its databases the repository holds is a target
    // of its own, with its own retention (a database dropped since keeps its backups until
    // the policy lets them go).
    if let Some(name) = target {
        if ctx
            .config
            .targets
            .iter()
            .any(|t| t.name == name && t.is_server())
        {
            let mut out = Vec::new();
            for m in crate::repo::members(ctx, name).await? {
                out.extend(selected(ctx, Some(&m), dry_run, force, now).await?);
            }
            // The server's own: its physical base backups and its WAL archive.
            out.extend(selected(ctx, Some(name), dry_run, force, now).await?);
            return Ok(out);
        }
    }
    selected(ctx, target, dry_run, force, now).await
}

/// [`run`] for one target named in the repository (or all of them).
async fn selected(
    ctx: &Context,
    target: Option<&str>,
    dry_run: bool,
    force: bool,
    now: DateTime<Utc>,
) -> Result<Vec<TargetPrune>> {
    let policy = policy(ctx)?;
    let store = ctx.store.as_ref();
    let catalog = crate::repo::catalog(store, target, &ctx.signing).await?;
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
        } else if let Some((t, rest)) = o.key.split_once('/') {
            // A target with WAL and no backup yet: its archive is looked at too.
            if rest.starts_with("wal/") {
                targets.insert(t.to_string());
            }
        }
    }
    let versioned = versioned(ctx).await;
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
        let decisions = plan::decisions(entries, &t, &policy, now);
        for d in decisions.iter().filter(|d| d.tiers.contains(&Tier::Future)) {
            tracing::warn!(
                "backup {} of `{t}` is dated in the future (clock skew on the host that took it?): kept, and not counted as the newest",
                d.id
            );
        }
        catalog.warn_untrusted_kept(&t);
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
            locked: Vec::new(),
            lock_extended: Vec::new(),
            wal: None,
        };
        if versioned {
            hold_locked(ctx, &t, &mut report, now).await?;
        }
        // The WAL the bases that remain (kept by the policy or by a lock) need.
        let kept: BTreeSet<BackupId> = report
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        report.wal = wal::plan(ctx, &t, entries, &kept, versioned, now).await?;
        if !dry_run {
            let lock = RunLock::acquire_for(ctx, &t, "prune").await?;
            let r = apply(ctx, &t, &mut report, &by_backup, &stale, versioned).await;
            // After the backups: a base deleted first never outlives its WAL.
            let r = match (r, &report.wal) {
                (Ok(()), Some(w)) => wal::apply(ctx, &t, w, versioned).await,
                (r, _) => r,
            };
            let r = match (r, ctx.store.location().object_lock()) {
                (Ok(()), Some(lock)) => {
                    extend_locks(ctx, &t, &mut report, &policy, &lock, now).await
                }
                (r, _) => r,
            };
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
    versioned: bool,
) -> Result<()> {
    let store = ctx.store.as_ref();
    for d in report.decisions.iter().filter(|d| !d.keep) {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("prune"));
        }
        if versioned {
            purge_backup(ctx, target, &d.id)
                .await
                .map_err(|e| e.context(format!("deleting backup {}", d.id)))?;
            tracing::info!(target, id = %d.id, "backup deleted (every version)");
            continue;
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
        if versioned {
            purge_backup(ctx, target, &d.id)
                .await
                .map_err(|e| e.context(format!("deleting damaged backup {}", d.id)))?;
            tracing::info!(target, id = %d.id, "damaged backup deleted (--force, every version)");
            continue;
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
    if versioned {
        let ids: BTreeSet<BackupId> = report
            .leftovers
            .iter()
            .filter_map(|k| keys::parse(k).map(|(_, id, _)| id))
            .collect();
        for id in ids {
            purge_backup(ctx, target, &id)
                .await
                .map_err(|e| e.context(format!("deleting the leftovers of {id}")))?;
        }
    } else {
        for k in &report.leftovers {
            store.delete(k).await?;
        }
    }
    for u in stale {
        if let Err(e) = store.abort_multipart(u).await {
            tracing::warn!("could not abort stale upload of {}: {e}", u.key);
        }
    }
    Ok(())
}
