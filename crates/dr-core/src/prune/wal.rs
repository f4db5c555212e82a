//! WAL retention in `dr prune` (docs/design/PITR.md §7): once a target's backups are
//! decided, the WAL that no remaining physical base backup needs is deleted.
//!
//! The bases that count are the trusted physical backups the policy keeps (or a lock keeps),
//! plus the newest trusted physical base whatever the policy says: its range is never
//! deleted. With no retained base nothing of the WAL archive is deleted at all: a first base
//! may be waiting for its WAL right now, and emptying the archive is not prune's call.
//!
//! Order, as [`WalPrune::keys`] gives it: every record before any data object, so a prune
//! that stops half way leaves orphans (deleted by a later prune), never a record naming a
//! missing object. On a versioned bucket every version of a key goes; a file one of whose
//! objects is still locked is kept whole and reported, never an error.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use dr_catalog::wal::continuity::Base;
use dr_catalog::wal::keys;
use dr_catalog::wal::retention::{self, Stored, WalPrune};
use dr_catalog::BackupId;
use dr_store::ObjectVersion;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::repo::BackupEntry;
use crate::{Context, Error, Result};

/// Consecutive segments of one timeline that prune deletes.
#[derive(Debug, Clone, Serialize)]
pub struct WalRange {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    pub bytes: u64,
    /// `wal app tl1 A..B 13 segments 49.6 MiB`, as `dr prune` prints it.
    #[serde(skip)]
    pub text: String,
}

/// A WAL object prune would delete but Object Lock still protects.
#[derive(Debug, Clone, Serialize)]
pub struct WalLocked {
    pub key: String,
    pub until: DateTime<Utc>,
}

/// What prune does to one target's WAL archive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalPruneReport {
    /// The physical base backups whose WAL is kept (ids); empty: nothing is deleted.
    pub bases: Vec<String>,
    /// Expired segments as ranges per timeline.
    pub ranges: Vec<WalRange>,
    /// Expired WAL files (segments, partials, backup history files).
    pub files: usize,
    /// Partials whose complete segment is archived.
    pub superseded: usize,
    /// Data objects no record names, older than a day.
    pub orphans: usize,
    /// Bytes of stored objects deleted.
    pub bytes: u64,
    /// Objects kept because they are locked (their file is kept whole).
    pub locked: Vec<WalLocked>,
    /// Data objects kept because their record exists but cannot be read or trusted.
    pub unreadable: Vec<String>,
    /// Timelines whose history record is missing: all their files are kept.
    pub unknown_timelines: Vec<u32>,
    #[serde(skip)]
    plan: WalPrune,
}

impl WalPruneReport {
    /// The keys deleted, records first.
    pub fn keys(&self) -> Vec<String> {
        self.plan.keys()
    }
}

/// The bases whose WAL is kept: the trusted physical backups of `target` in `kept`, and
/// the newest trusted physical base (never its range). Empty when none is kept.
fn bases(entries: &[BackupEntry], target: &str, kept: &BTreeSet<BackupId>) -> Vec<Base> {
    let mine: Vec<BackupEntry> = entries
        .iter()
        .filter(|e| e.manifest.target == target && e.trust.is_trusted())
        .cloned()
        .collect();
    let all = crate::wal::catalog::bases(&mine);
    let mut retained: Vec<Base> = all
        .iter()
        .filter(|b| b.trusted && b.id.parse().is_ok_and(|id| kept.contains(&id)))
        .cloned()
        .collect();
    if retained.is_empty() {
        return retained;
    }
    if let Some(newest) = all
        .iter()
        .filter(|b| b.trusted)
        .max_by_key(|b| b.stopped_at)
    {
        if !retained.iter().any(|b| b.id == newest.id) {
            retained.push(newest.clone());
        }
    }
    retained
}

/// Plan the WAL prune of `target`; `None` when the repository holds no WAL for it. `kept`:
/// the backups that remain after this prune.
pub(super) async fn plan(
    ctx: &Context,
    target: &str,
    entries: &[BackupEntry],
    kept: &BTreeSet<BackupId>,
    versioned: bool,
    now: DateTime<Utc>,
) -> Result<Option<WalPruneReport>> {
    let catalog = crate::wal::catalog::load(ctx, target)
        .await
        .map_err(|e| e.context("reading the WAL archive for prune (nothing was deleted)"))?;
    if catalog.listing.is_empty() {
        return Ok(None);
    }
    for (key, why) in &catalog.refused {
        tracing::warn!("WAL record `{key}` is not used ({why}): its file is kept");
    }
    let bases = bases(entries, target, kept);
    if bases.is_empty() {
        tracing::info!(
            "no retained physical base backup of `{target}`: its WAL archive is kept whole (prune deletes only WAL older than the oldest retained base; take one with `dr backup --physical`)"
        );
        return Ok(Some(WalPruneReport::default()));
    }
    let listing: Vec<Stored> = catalog
        .listing
        .iter()
        .map(|o| Stored {
            key: o.key.clone(),
            // No time known: never old enough to be an orphan.
            modified: o.last_modified.unwrap_or(now),
            bytes: o.size,
        })
        .collect();
    let size = catalog.segment_size();
    let mut plan = retention::plan(
        target,
        &bases,
        &catalog.archived,
        &listing,
        &catalog.timelines,
        size,
        now,
    );
    let mut locked = Vec::new();
    if versioned {
        let held = locked_keys(ctx, target, &plan, now).await?;
        let keys: BTreeSet<String> = held.keys().cloned().collect();
        plan.hold(target, &keys, size);
        locked = held
            .into_iter()
            .map(|(key, until)| WalLocked { key, until })
            .collect();
        if let Some(until) = locked.iter().map(|l| l.until).max() {
            tracing::warn!(
                "{} WAL objects of `{target}` are locked (Object Lock, until {} at the latest): their files are kept; a later prune removes them",
                locked.len(),
                until.to_rfc3339()
            );
        }
    }
    for t in &plan.unknown_timelines {
        tracing::warn!(
            "WAL of timeline {t} of `{target}` is kept whole: its history record is missing"
        );
    }
    Ok(Some(WalPruneReport {
        bases: bases.iter().map(|b| b.id.clone()).collect(),
        ranges: plan
            .ranges
            .iter()
            .map(|r| WalRange {
                timeline: r.timeline,
                first: r.first.to_string(),
                last: r.last.to_string(),
                segments: r.segments,
                bytes: r.bytes,
                text: r.to_string(),
            })
            .collect(),
        files: plan.expired.len(),
        superseded: plan.superseded.len(),
        orphans: plan.orphans.len(),
        bytes: plan.bytes(),
        locked,
        unreadable: plan.unreadable.clone(),
        unknown_timelines: plan.unknown_timelines.clone(),
        plan,
    }))
}

/// Every version of every object under `target`'s WAL archive, by key.
async fn versions(ctx: &Context, target: &str) -> Result<BTreeMap<String, Vec<ObjectVersion>>> {
    let mut by_key: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
    for v in ctx
        .store
        .list_versions(&keys::root(target))
        .await
        .map_err(|e| {
            Error::from(e).context(format!(
                "listing the versions of the WAL archive of `{target}` (nothing was deleted)"
            ))
        })?
    {
        by_key.entry(v.key.clone()).or_default().push(v);
    }
    Ok(by_key)
}

/// The keys `plan` would delete that have a version locked beyond `now`, with the latest
/// retain-until date of each.
async fn locked_keys(
    ctx: &Context,
    target: &str,
    plan: &WalPrune,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, DateTime<Utc>>> {
    let wanted: BTreeSet<String> = plan.keys().into_iter().collect();
    let all = versions(ctx, target).await?;
    let store = ctx.store.as_ref();
    let lookups: Vec<_> = all
        .iter()
        .filter(|(k, _)| wanted.contains(*k))
        .flat_map(|(_, vs)| vs.iter().filter(|v| !v.delete_marker))
        .map(|v| async move {
            let r = store.version_retention(&v.key, &v.version_id).await?;
            Ok::<_, Error>((v.key.clone(), r.map(|r| r.until)))
        })
        .collect();
    let found: Vec<(String, Option<DateTime<Utc>>)> = stream::iter(lookups)
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut out: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for (key, until) in found {
        if let Some(until) = until.filter(|u| *u > now) {
            let e = out.entry(key).or_insert(until);
            *e = (*e).max(until);
        }
    }
    Ok(out)
}

/// Delete what `report` planned, records first. `versioned`: every version of each key.
pub(super) async fn apply(
    ctx: &Context,
    target: &str,
    report: &WalPruneReport,
    versioned: bool,
) -> Result<()> {
    let keys = report.keys();
    if keys.is_empty() {
        return Ok(());
    }
    let mut all = if versioned {
        versions(ctx, target).await?
    } else {
        BTreeMap::new()
    };
    for key in &keys {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("prune"));
        }
        let failed = |e: dr_store::StoreError| {
            Error::from(e).context(format!(
                "deleting `{key}` of the WAL archive of `{target}` (a later prune deletes the rest)"
            ))
        };
        if !versioned {
            ctx.store.delete(key).await.map_err(failed)?;
            continue;
        }
        for v in all.remove(key).unwrap_or_default() {
            ctx.store
                .delete_version(&v.key, &v.version_id)
                .await
                .map_err(failed)?;
        }
    }
    for r in &report.ranges {
        tracing::info!("{} deleted", r.text);
    }
    tracing::info!(
        target,
        objects = keys.len(),
        bytes = report.bytes,
        "WAL no retained base needs deleted"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, physical};

    fn ids(bases: &[Base]) -> Vec<&str> {
        bases.iter().map(|b| b.id.as_str()).collect()
    }

    fn kept(list: &[&str]) -> BTreeSet<BackupId> {
        list.iter().map(|i| i.parse().expect("id")).collect()
    }

    #[test]
    fn the_retained_bases_and_the_newest_one_count() {
        let mut untrusted = physical("app", "20261122T020000Z", "0/9000028", "0/9000100");
        untrusted.trust = crate::trust::Trust::Unsigned;
        let entries = vec![
            physical("app", "20261120T020000Z", "0/3000028", "0/3000100"),
            physical("app", "20261121T020000Z", "0/8000028", "0/8000100"),
            entry("app", "20261121T030000Z"),
            untrusted,
            physical("db", "20261121T040000Z", "0/9000028", "0/9000100"),
        ];
        // The policy keeps the older base and the logical backup, not the newest base: its
        // range is kept all the same. An unsigned base and another target's count for nothing.
        let b = bases(
            &entries,
            "app",
            &kept(&["20261120T020000Z", "20261121T030000Z", "20261122T020000Z"]),
        );
        assert_eq!(ids(&b), ["20261120T020000Z", "20261121T020000Z"]);
        // Only the newest base retained: only it.
        let b = bases(&entries, "app", &kept(&["20261121T020000Z"]));
        assert_eq!(ids(&b), ["20261121T020000Z"]);
        // No physical base retained: none at all (nothing of the WAL is deleted).
        assert!(bases(&entries, "app", &kept(&["20261121T030000Z"])).is_empty());
    }
}
