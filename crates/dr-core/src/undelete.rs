//! `dr list --deleted` and `dr undelete`: backups hidden by delete markers, and bringing them
//! back.
//!
//! On a versioned bucket (always so with Object Lock), a DELETE without a version id only
//! adds a delete marker: the object disappears from listings, but its versions, and their
//! locks, are intact. That is what someone holding the backup host's credentials gets to do
//! when the backups are locked. A **deleted backup** is one whose manifest's current entry is
//! a delete marker while a real version of it exists. Undeleting removes the delete markers
//! that stand on top of the newest real version of each of its objects; the versions (and
//! their Object Lock retention) are never touched or copied, so the locks are kept as they
//! were.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId};
use dr_store::{ObjectStore, ObjectVersion};
use serde::Serialize;

use crate::{Context, Error, Kind, Result};

/// One backup hidden by delete markers.
#[derive(Debug, Clone, Serialize)]
pub struct DeletedBackup {
    pub target: String,
    pub id: BackupId,
    /// The manifest version that comes back.
    pub manifest_version: String,
    /// When the newest delete marker was placed.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Objects of the backup (manifest included) hidden by delete markers.
    pub hidden_objects: usize,
    /// Delete markers to remove.
    pub markers: Vec<Marker>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub key: String,
    pub version_id: String,
}

/// Delete markers above the newest real version of `versions` (one key, newest first).
fn markers_on_top(versions: &[&ObjectVersion]) -> Option<Vec<Marker>> {
    let newest_real = versions.iter().position(|v| !v.delete_marker)?;
    let on_top: Vec<Marker> = versions[..newest_real]
        .iter()
        .filter(|v| v.delete_marker)
        .map(|v| Marker {
            key: v.key.clone(),
            version_id: v.version_id.clone(),
        })
        .collect();
    Some(on_top)
}

/// Every deleted backup, newest first. Pure: from a version listing.
pub fn find_deleted(versions: &[ObjectVersion]) -> Vec<DeletedBackup> {
    // (target, id) -> key -> versions (newest first, as listed)
    let mut by_backup: BTreeMap<(String, BackupId), BTreeMap<&str, Vec<&ObjectVersion>>> =
        BTreeMap::new();
    for v in versions {
        if let Some((t, id, _)) = keys::parse(&v.key) {
            by_backup
                .entry((t.to_string(), id))
                .or_default()
                .entry(v.key.as_str())
                .or_default()
                .push(v);
        }
    }
    let mut out = Vec::new();
    for ((target, id), objects) in by_backup {
        let manifest_key = keys::manifest(&target, &id);
        let Some(manifest) = objects.get(manifest_key.as_str()) else {
            continue;
        };
        // Deleted: the manifest's current entry is a marker, a real version lies below.
        if !manifest.first().is_some_and(|v| v.delete_marker) {
            continue;
        }
        let Some(real) = manifest.iter().find(|v| !v.delete_marker) else {
            continue;
        };
        let mut markers = Vec::new();
        let mut hidden = 0;
        let mut deleted_at = None;
        for versions in objects.values() {
            if let Some(on_top) = markers_on_top(versions) {
                if !on_top.is_empty() {
                    hidden += 1;
                    deleted_at = deleted_at.max(versions[0].last_modified);
                    markers.extend(on_top);
                }
            }
        }
        out.push(DeletedBackup {
            target,
            id,
            manifest_version: real.version_id.clone(),
            deleted_at,
            hidden_objects: hidden,
            markers,
        });
    }
    out.sort_by(|a, b| b.id.cmp(&a.id).then_with(|| a.target.cmp(&b.target)));
    out
}

/// Deleted backups of `target` (or all), newest first.
pub async fn deleted(store: &dyn ObjectStore, target: Option<&str>) -> Result<Vec<DeletedBackup>> {
    let prefix = target.map(|t| format!("{t}/")).unwrap_or_default();
    let versions = store.list_versions(&prefix).await.map_err(|e| {
        Error::from(e)
            .context("listing object versions (deleted backups exist only on a versioned bucket)")
    })?;
    Ok(find_deleted(&versions))
}

/// Which deleted backups to bring back.
#[derive(Debug, Clone)]
pub enum Which {
    Latest,
    Id(BackupId),
    All,
}

/// Remove the delete markers of the chosen deleted backups; returns what came back.
pub async fn run(ctx: &Context, target: Option<&str>, which: &Which) -> Result<Vec<DeletedBackup>> {
    let all = deleted(ctx.store.as_ref(), target).await?;
    let chosen: Vec<DeletedBackup> = match which {
        Which::All => all,
        Which::Latest => {
            let mut targets: Vec<&str> = all.iter().map(|d| d.target.as_str()).collect();
            targets.sort_unstable();
            targets.dedup();
            if targets.len() > 1 {
                return Err(Error::config(format!(
                    "deleted backups of several targets ({})\nhint: add --target NAME",
                    targets.join(", ")
                )));
            }
            all.into_iter().take(1).collect()
        }
        Which::Id(id) => {
            let found: Vec<DeletedBackup> = all.into_iter().filter(|d| d.id == *id).collect();
            if found.len() > 1 {
                return Err(Error::config(format!(
                    "deleted backup {id} exists for several targets\nhint: add --target NAME"
                )));
            }
            found
        }
    };
    if chosen.is_empty() {
        return Err(Error::new(
            Kind::Failed,
            format!(
                "no deleted backup{} to bring back\nhint: `dr list --deleted` shows backups hidden by delete markers; `dr list` shows the others",
                match which {
                    Which::Id(id) => format!(" {id}"),
                    _ => String::new(),
                }
            ),
        ));
    }
    for d in &chosen {
        // Objects first, the manifest last: the backup reappears only once it is whole.
        let mut markers: Vec<&Marker> = d.markers.iter().collect();
        markers.sort_by_key(|m| m.key.ends_with(keys::MANIFEST));
        for m in markers {
            if ctx.cancel.is_cancelled() {
                return Err(Error::interrupted("undelete"));
            }
            ctx.store
                .delete_version(&m.key, &m.version_id)
                .await
                .map_err(|e| {
                    Error::from(e).context(format!(
                        "removing the delete marker {} of {} (backup {} of `{}`)",
                        m.version_id, m.key, d.id, d.target
                    ))
                })?;
        }
        tracing::info!(target = %d.target, id = %d.id, markers = d.markers.len(), "backup undeleted");
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, id: &str, latest: bool, marker: bool) -> ObjectVersion {
        ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            is_latest: latest,
            delete_marker: marker,
            size: 1,
            last_modified: None,
        }
    }

    #[test]
    fn a_backup_whose_manifest_is_delete_marked_is_deleted() {
        let versions = vec![
            // Deleted: markers on the manifest and one object.
            v("app/20261120T030000Z/data-1.zst.age", "m2", true, true),
            v("app/20261120T030000Z/data-1.zst.age", "d1", false, false),
            v("app/20261120T030000Z/manifest.json", "m1", true, true),
            v("app/20261120T030000Z/manifest.json", "x1", false, false),
            v("app/20261120T030000Z/post-data.zst.age", "p1", true, false),
            // Intact.
            v("app/20261121T030000Z/manifest.json", "y1", true, false),
            // Marker without a real version: nothing to bring back.
            v("app/20261119T030000Z/manifest.json", "z1", true, true),
            v("locks/app.json", "l1", true, true),
        ];
        let d = find_deleted(&versions);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].id.to_string(), "20261120T030000Z");
        assert_eq!(d[0].manifest_version, "x1");
        assert_eq!(d[0].hidden_objects, 2);
        let ids: Vec<&str> = d[0].markers.iter().map(|m| m.version_id.as_str()).collect();
        assert_eq!(ids, vec!["m2", "m1"]);
    }
}
