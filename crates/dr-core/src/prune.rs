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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, retention_plan, BackupId, Decision, Policy, Tier};
use dr_store::Retention;
use futures::stream::{self, StreamExt, TryStreamExt};
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
    /// What prune would delete but Object Lock still protects: kept whole, removed by a later
    /// prune once `until` has passed.
    pub locked: Vec<LockedPrune>,
    /// Kept backups whose lock was extended (with `[repository.object_lock]`).
    pub lock_extended: Vec<LockExtended>,
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
            for m in crate::status::members_in_repository(ctx, name).await? {
                out.extend(Box::pin(run(ctx, Some(&m), dry_run, force, now)).await?);
            }
            return Ok(out);
        }
    }
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
        let complete = crate::repo::retention_inputs(entries, &t);
        let decisions = retention_plan(&complete, &policy, now);
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
        };
        if versioned {
            hold_locked(ctx, &t, &mut report, now).await?;
        }
        if !dry_run {
            let lock = RunLock::acquire_for(ctx, &t, "prune").await?;
            let r = apply(ctx, &t, &mut report, &by_backup, &stale, versioned).await;
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

/// Whether deletes must remove versions: the bucket keeps them (versioning enabled or
/// suspended, or Object Lock). A bucket whose versioning these credentials may not read is
/// treated as versioned only with `[repository.object_lock]`; that is logged at debug only
/// (every night's prune would say the same): `dr check` says it once, with what it means. A
/// failure to ask at all is a warning.
async fn versioned(ctx: &Context) -> bool {
    let assume = ctx.store.location().object_lock().is_some();
    match ctx.store.lock_state().await {
        Ok(s) => s.versioned().unwrap_or_else(|| {
            tracing::debug!(
                "the bucket's versioning is not known to these credentials ({}); prune treats it as {}",
                s.unknown.clone().unwrap_or_else(|| format!("S3 {} is refused", dr_store::API_VERSIONING)),
                if assume { "versioned" } else { "unversioned" }
            );
            assume
        }),
        Err(e) => {
            tracing::warn!(
                "cannot read the bucket's versioning and Object Lock state ({e}); prune treats it as {}",
                if assume {
                    "versioned ([repository.object_lock] is set)"
                } else {
                    "unversioned: deleted backups may leave old versions behind"
                }
            );
            assume
        }
    }
}

/// Every version and delete marker under `{target}/{id}/`: the manifest's first, so the
/// backup stops being listed before anything else goes.
async fn purge_backup(ctx: &Context, target: &str, id: &BackupId) -> Result<()> {
    let store = ctx.store.as_ref();
    let prefix = keys::backup_prefix(target, id);
    let mut versions = store.list_versions(&prefix).await?;
    versions.sort_by_key(|v| !v.key.ends_with(keys::MANIFEST));
    for v in versions {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("prune"));
        }
        store
            .delete_version(&v.key, &v.version_id)
            .await
            .map_err(|e| {
                Error::from(e).context(format!(
                    "deleting version {} of {} (its lock had expired when prune looked)",
                    v.version_id, v.key
                ))
            })?;
    }
    Ok(())
}

/// The latest retain-until date still ahead of `now` among the versions under `prefix`;
/// `None` when nothing there is locked.
async fn locked_until(
    ctx: &Context,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let store = ctx.store.as_ref();
    let versions = store.list_versions(prefix).await?;
    let lookups: Vec<_> = versions
        .iter()
        .filter(|v| !v.delete_marker)
        .map(|v| retention_until(store, v))
        .collect();
    let untils: Vec<Option<DateTime<Utc>>> = stream::iter(lookups)
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(untils.into_iter().flatten().filter(|u| *u > now).max())
}

async fn retention_until(
    store: &dyn dr_store::ObjectStore,
    v: &dr_store::ObjectVersion,
) -> Result<Option<DateTime<Utc>>> {
    Ok(store
        .version_retention(&v.key, &v.version_id)
        .await?
        .map(|r| r.until))
}

/// Extend one version's lock to `until` unless it already lasts that long; true if extended.
async fn extend_version(
    store: &dyn dr_store::ObjectStore,
    v: &dr_store::ObjectVersion,
    mode: dr_store::LockMode,
    until: DateTime<Utc>,
) -> Result<bool> {
    let current = store.version_retention(&v.key, &v.version_id).await?;
    if current.is_some_and(|c| c.until >= until) {
        return Ok(false);
    }
    let mode = match current {
        Some(c) if c.mode == dr_store::LockMode::Compliance => c.mode,
        _ => mode,
    };
    store
        .set_version_retention(&v.key, &v.version_id, &Retention { mode, until })
        .await
        .map_err(|e| {
            Error::from(e).context(format!(
                "extending the lock of {} (version {}) to {}",
                v.key,
                v.version_id,
                until.to_rfc3339()
            ))
        })?;
    Ok(true)
}

/// Keep (whole) what prune would delete but a lock still protects, and say until when.
async fn hold_locked(
    ctx: &Context,
    target: &str,
    report: &mut TargetPrune,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut locked = Vec::new();
    for d in report.decisions.iter_mut().filter(|d| !d.keep) {
        if let Some(until) = locked_until(ctx, &keys::backup_prefix(target, &d.id), now).await? {
            d.keep = true;
            locked.push(LockedPrune {
                id: d.id,
                what: "backup",
                until,
            });
        }
    }
    for d in report.damaged.iter_mut().filter(|d| !d.keep) {
        if let Some(until) = locked_until(ctx, &keys::backup_prefix(target, &d.id), now).await? {
            d.keep = true;
            locked.push(LockedPrune {
                id: d.id,
                what: "damaged",
                until,
            });
        }
    }
    let ids: BTreeSet<BackupId> = report
        .leftovers
        .iter()
        .filter_map(|k| keys::parse(k).map(|(_, id, _)| id))
        .collect();
    for id in ids {
        let prefix = keys::backup_prefix(target, &id);
        // A manifest behind a delete marker: a deleted backup, not a failed one.
        let versions = ctx.store.list_versions(&prefix).await?;
        if versions
            .iter()
            .any(|v| !v.delete_marker && v.key.ends_with(keys::MANIFEST))
        {
            tracing::warn!(
                "backup {id} of `{target}` is deleted (its manifest is hidden by a delete marker) but its versions are intact: not a leftover; `dr undelete {id} --target {target}` brings it back"
            );
            report.leftovers.retain(|k| !k.starts_with(&prefix));
            continue;
        }
        if let Some(until) = locked_until(ctx, &prefix, now).await? {
            report.leftovers.retain(|k| !k.starts_with(&prefix));
            locked.push(LockedPrune {
                id,
                what: "leftover",
                until,
            });
        }
    }
    for l in &locked {
        tracing::warn!(
            "{} {} of `{target}` is locked until {} (Object Lock): kept; a later prune removes it",
            l.what,
            l.id,
            l.until.to_rfc3339()
        );
    }
    report.locked = locked;
    Ok(())
}

/// Until when a kept backup must stay locked: `days` beyond the day it is expected to leave
/// the policy, and at least `days` beyond `now`. Rounded up to a UTC midnight, so prune runs
/// on the same day do not extend again.
///
/// The day it leaves the policy assumes one backup per period from now on (what the
/// schedules are for): a daily keeper of day D leaves on day D + `daily`, a weekly one at the
/// start of its ISO week + `weekly` weeks, a monthly one on the first of its month +
/// `monthly` months, a yearly one on January 1 + `yearly` years (in the policy's time zone,
/// plus a day of slack for the offset). A backup kept only as the newest, the newest verified
/// or a future-dated one has no horizon beyond `now`. If backups stop, keepers stay in the
/// policy longer than estimated; every prune run re-extends them to at least `now + days`,
/// so a backup the policy keeps is never unlocked while prune runs at least every `days`.
pub fn lock_horizon(
    id: &BackupId,
    tiers: &[Tier],
    policy: &Policy,
    days: chrono::Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    use chrono::{Datelike, Months, NaiveDate};
    let local = id.time().with_timezone(&policy.timezone).date_naive();
    let leaves = |tier: &Tier| -> Option<NaiveDate> {
        match tier {
            Tier::Daily => local.checked_add_days(chrono::Days::new(u64::from(policy.daily))),
            Tier::Weekly => {
                let monday = local
                    - chrono::Duration::days(i64::from(local.weekday().num_days_from_monday()));
                monday.checked_add_days(chrono::Days::new(7 * u64::from(policy.weekly)))
            }
            Tier::Monthly => NaiveDate::from_ymd_opt(local.year(), local.month(), 1)?
                .checked_add_months(Months::new(policy.monthly)),
            Tier::Yearly => NaiveDate::from_ymd_opt(local.year(), 1, 1)?
                .checked_add_months(Months::new(12 * policy.yearly)),
            Tier::Newest | Tier::NewestVerified | Tier::Future => None,
        }
    };
    let exit = tiers
        .iter()
        .filter_map(leaves)
        .filter_map(|d| d.succ_opt()?.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .max()
        .map_or(now, |t| t.max(now));
    let until = exit + days;
    let midnight = until
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    match midnight {
        Some(m) if until.time() != chrono::NaiveTime::MIN => m,
        _ => until,
    }
}

/// Extend the lock of every object version of every kept backup to [`lock_horizon`]. A
/// COMPLIANCE lock stays COMPLIANCE (it cannot be weakened); versions already locked long
/// enough are left alone. One version that cannot be extended fails prune: the operator
/// must know a kept backup is less protected than configured.
async fn extend_locks(
    ctx: &Context,
    target: &str,
    report: &mut TargetPrune,
    policy: &Policy,
    lock: &dr_store::ObjectLock,
    now: DateTime<Utc>,
) -> Result<()> {
    let store = ctx.store.as_ref();
    let locked: BTreeSet<BackupId> = report.locked.iter().map(|l| l.id).collect();
    for d in report
        .decisions
        .iter()
        .filter(|d| d.keep && !locked.contains(&d.id))
    {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("prune"));
        }
        let until = lock_horizon(&d.id, &d.tiers, policy, lock.duration(), now);
        let versions = store
            .list_versions(&keys::backup_prefix(target, &d.id))
            .await?;
        let updates: Vec<_> = versions
            .iter()
            .filter(|v| !v.delete_marker)
            .map(|v| extend_version(store, v, lock.mode, until))
            .collect();
        let extended: Vec<bool> = stream::iter(updates)
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let n = extended.iter().filter(|e| **e).count();
        if n > 0 {
            tracing::info!(target, id = %d.id, until = %until.to_rfc3339(), versions = n, "lock extended");
            report.lock_extended.push(LockExtended {
                id: d.id,
                until,
                versions: n,
            });
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
    fn a_kept_backup_is_locked_until_it_leaves_the_policy_plus_days() {
        let policy = Policy {
            daily: 7,
            weekly: 4,
            monthly: 6,
            yearly: 0,
            timezone: chrono_tz::UTC,
        };
        let days = chrono::Duration::days(14);
        let id: BackupId = "20261118T030000Z".parse().expect("id"); // a Wednesday
        let now = t("20261120T120000Z");
        // Daily only: leaves on Nov 25, +1 day slack, +14 days.
        let h = lock_horizon(&id, &[Tier::Daily], &policy, days, now);
        assert_eq!(h, t("20261210T000000Z"));
        // Weekly: its week began Nov 16; leaves Dec 14.
        let h = lock_horizon(&id, &[Tier::Daily, Tier::Weekly], &policy, days, now);
        assert_eq!(h, t("20261229T000000Z"));
        // Monthly: Nov 1 + 6 months = May 1.
        let h = lock_horizon(&id, &[Tier::Monthly], &policy, days, now);
        assert_eq!(h, t("20270516T000000Z"));
        // Only the newest: now + 14 days, rounded up to midnight.
        let h = lock_horizon(&id, &[Tier::Newest], &policy, days, now);
        assert_eq!(h, t("20261205T000000Z"));
        // An estimate in the past never makes the lock shorter than now + days.
        let late = t("20270101T000000Z");
        let h = lock_horizon(&id, &[Tier::Daily], &policy, days, late);
        assert_eq!(h, t("20270115T000000Z"));
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
