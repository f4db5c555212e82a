//! Prune on a versioned bucket (always so with Object Lock): whether the bucket keeps
//! versions, deleting every version of a backup, holding (whole) what a lock still protects,
//! and extending the lock of every kept backup to [`lock_horizon`].

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId, Policy, Tier};
use dr_store::Retention;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::plan::{LockExtended, LockedPrune, TargetPrune};
use crate::{Context, Error, Result};

/// Whether deletes must remove versions: the bucket keeps them (versioning enabled or
/// suspended, or Object Lock). A bucket whose versioning these credentials may not read is
/// treated as versioned only with `[repository.object_lock]`; that is logged at debug only
/// (every night's prune would say the same): `dr check` says it once, with what it means. A
/// failure to ask at all is a warning.
pub(super) async fn versioned(ctx: &Context) -> bool {
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
pub(super) async fn purge_backup(ctx: &Context, target: &str, id: &BackupId) -> Result<()> {
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
pub(super) async fn hold_locked(
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
pub(super) async fn extend_locks(
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
}
