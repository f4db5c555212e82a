//! `dr list --deleted` and `dr undelete`: backups hidden by delete markers or overwritten by
//! newer versions, and bringing the originals back.
//!
//! On a versioned bucket (always so with Object Lock), a DELETE without a version id only
//! adds a delete marker, and a PUT onto an existing key only adds a newer version: the
//! object's earlier versions, and their locks, are intact. That is all someone holding the
//! backup host's credentials gets to do when the backups are locked.
//!
//! dr writes every object of a backup exactly once (a retried write stores the same bytes
//! again), so the **original** of a key is its oldest real version, and any newer version
//! holding other bytes (another size or ETag) was written by someone else. Per backup:
//!
//! - **deleted**: the manifest's current entry is a delete marker while a real version of it
//!   exists;
//! - **overwritten**: some key of the backup (the manifest, a dump part, …) has a newer
//!   version whose bytes differ from the original's: an attacker replaced the manifest (by
//!   garbage, altered digests, another backup's manifest) or a data object. Found from the
//!   version listing alone (sizes and ETags), nothing is downloaded.
//!
//! Undeleting makes the original of every affected key current again, objects first and the
//! manifest last. Delete markers are removed. Newer versions with other bytes are removed
//! when none of them is locked (an attacker's writes usually are not, unless a bucket
//! default retention applies); a locked one is never deleted: the original is copied onto
//! the key instead (a server-side copy, a new version carrying the original's retention on
//! the copy itself). The original versions are never touched.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId};
use dr_store::{ObjectStore, ObjectVersion};
use serde::Serialize;

use crate::{Context, Error, Kind, Result};

/// One backup hidden by delete markers, or with objects overwritten by newer versions.
#[derive(Debug, Clone, Serialize)]
pub struct DeletedBackup {
    pub target: String,
    pub id: BackupId,
    /// `deleted`, `overwritten`, or `deleted,overwritten`.
    pub state: String,
    /// The manifest version that comes back (the one dr wrote).
    pub manifest_version: String,
    /// When the newest delete marker was placed.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Objects of the backup (manifest included) hidden by delete markers.
    pub hidden_objects: usize,
    /// Delete markers to remove.
    pub markers: Vec<Marker>,
    /// Objects (manifest included) whose current version is not the one dr wrote.
    pub overwritten: Vec<Overwritten>,
    /// `dr undelete` only: what was done to each object brought back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<Restored>,
}

impl DeletedBackup {
    /// Its manifest was replaced.
    pub fn manifest_overwritten(&self) -> bool {
        self.overwritten
            .iter()
            .any(|o| o.key.ends_with(&format!("/{}", keys::MANIFEST)))
    }

    /// "overwritten: manifest.json, data-1.zst.age (newer versions than dr wrote)", for
    /// `dr list`; `None` when nothing was overwritten.
    pub fn overwritten_note(&self) -> Option<String> {
        if self.overwritten.is_empty() {
            return None;
        }
        let prefix = format!("{}/{}/", self.target, self.id);
        let names: Vec<&str> = self
            .overwritten
            .iter()
            .map(|o| o.key.strip_prefix(&prefix).unwrap_or(&o.key))
            .collect();
        Some(format!(
            "overwritten: {} replaced by newer versions than dr wrote; dr's locked versions are intact: run `dr undelete {}{}`",
            names.join(", "),
            self.id,
            // Several targets may share an id; naming the target is always right.
            format_args!(" --target {}", self.target)
        ))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub key: String,
    pub version_id: String,
}

/// A key whose current version holds other bytes than the version dr wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Overwritten {
    pub key: String,
    /// The version dr wrote (the oldest), which comes back.
    pub original_version: String,
    pub original_size: u64,
    /// The newer versions with other bytes, newest first.
    pub newer_versions: Vec<String>,
    /// When the newest of them was written.
    pub overwritten_at: Option<DateTime<Utc>>,
}

/// What `dr undelete` did to one key.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub key: String,
    /// The version that is current again.
    pub version_id: String,
    /// `removed_markers` (only delete markers stood on top), `removed_newer` (the newer
    /// versions were not locked and were deleted, markers too) or `copied` (a newer version
    /// is locked: the original was copied onto the key, with its retention).
    pub action: String,
    /// Versions and markers deleted.
    pub removed: Vec<String>,
}

/// One key of a backup: its versions newest first, and what stands on its original.
struct KeyState<'a> {
    key: &'a str,
    /// The version to bring back: the newest one with the original's bytes.
    keep: &'a ObjectVersion,
    /// Markers and versions above `keep`, newest first.
    on_top: &'a [&'a ObjectVersion],
    /// Real versions in `on_top` (all with other bytes than the original).
    foreign: Vec<&'a ObjectVersion>,
}

fn key_state<'a>(versions: &'a [&'a ObjectVersion]) -> Option<KeyState<'a>> {
    let original = versions.iter().rev().find(|v| !v.delete_marker)?;
    let keep_at = versions
        .iter()
        .position(|v| v.same_content(original))
        .unwrap_or(versions.len() - 1);
    let on_top = &versions[..keep_at];
    Some(KeyState {
        key: original.key.as_str(),
        keep: versions[keep_at],
        on_top,
        foreign: on_top
            .iter()
            .filter(|v| !v.delete_marker)
            .copied()
            .collect(),
    })
}

/// Every deleted or overwritten backup, newest first. Pure: from a version listing.
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
        let Some(manifest_state) = key_state(manifest) else {
            continue;
        };
        let states: Vec<KeyState> = objects.values().filter_map(|v| key_state(v)).collect();
        // Deleted: the manifest's current entry is a marker, a real version lies below.
        let deleted = manifest.first().is_some_and(|v| v.delete_marker);
        let overwritten: Vec<Overwritten> = states
            .iter()
            .filter(|k| !k.foreign.is_empty())
            .map(|k| Overwritten {
                key: k.key.to_owned(),
                original_version: k.keep.version_id.clone(),
                original_size: k.keep.size,
                newer_versions: k.foreign.iter().map(|v| v.version_id.clone()).collect(),
                overwritten_at: k.foreign.iter().filter_map(|v| v.last_modified).max(),
            })
            .collect();
        if !deleted && overwritten.is_empty() {
            continue;
        }
        let mut markers = Vec::new();
        let mut hidden = 0;
        let mut deleted_at = None;
        for k in &states {
            let on_top: Vec<&&ObjectVersion> =
                k.on_top.iter().filter(|v| v.delete_marker).collect();
            // Hidden: the current entry is a marker.
            if k.on_top.first().is_some_and(|v| v.delete_marker) {
                hidden += 1;
            }
            if let Some(t) = on_top.iter().filter_map(|v| v.last_modified).max() {
                deleted_at = deleted_at.max(Some(t));
            }
            markers.extend(on_top.iter().map(|v| Marker {
                key: v.key.clone(),
                version_id: v.version_id.clone(),
            }));
        }
        let state = match (deleted, overwritten.is_empty()) {
            (true, false) => "deleted,overwritten",
            (true, true) => "deleted",
            (false, _) => "overwritten",
        };
        out.push(DeletedBackup {
            target,
            id,
            state: state.to_owned(),
            manifest_version: manifest_state.keep.version_id.clone(),
            deleted_at,
            hidden_objects: hidden,
            markers,
            overwritten,
            restored: Vec::new(),
        });
    }
    out.sort_by(|a, b| b.id.cmp(&a.id).then_with(|| a.target.cmp(&b.target)));
    out
}

/// Deleted or overwritten backups of `target` (or all), newest first.
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

/// Bring back the chosen deleted or overwritten backups; returns what came back, with what
/// was done (`restored`).
pub async fn run(ctx: &Context, target: Option<&str>, which: &Which) -> Result<Vec<DeletedBackup>> {
    let prefix = target.map(|t| format!("{t}/")).unwrap_or_default();
    let versions = ctx.store.list_versions(&prefix).await.map_err(|e| {
        Error::from(e)
            .context("listing object versions (deleted backups exist only on a versioned bucket)")
    })?;
    let all = find_deleted(&versions);
    let chosen: Vec<DeletedBackup> = match which {
        Which::All => all,
        Which::Latest => {
            let mut targets: Vec<&str> = all.iter().map(|d| d.target.as_str()).collect();
            targets.sort_unstable();
            targets.dedup();
            if targets.len() > 1 {
                return Err(Error::config(format!(
                    "deleted backups of several targets ({})",
                    targets.join(", ")
                ))
                .with_hint("add --target NAME"));
            }
            all.into_iter().take(1).collect()
        }
        Which::Id(id) => {
            let found: Vec<DeletedBackup> = all.into_iter().filter(|d| d.id == *id).collect();
            if found.len() > 1 {
                return Err(Error::config(format!(
                    "deleted backup {id} exists for several targets"
                ))
                .with_hint("add --target NAME"));
            }
            found
        }
    };
    if chosen.is_empty() {
        return Err(Error::new(
            Kind::Failed,
            format!(
                "no deleted or overwritten backup{} to bring back",
                match which {
                    Which::Id(id) => format!(" {id}"),
                    _ => String::new(),
                }
            ),
        ).with_hint("`dr list --deleted` shows backups hidden by delete markers or overwritten; `dr list` shows the others"));
    }
    // (key -> versions, newest first) of the listing.
    let mut by_key: BTreeMap<&str, Vec<&ObjectVersion>> = BTreeMap::new();
    for v in &versions {
        by_key.entry(v.key.as_str()).or_default().push(v);
    }
    let mut back = Vec::with_capacity(chosen.len());
    for mut d in chosen {
        let backup_prefix = format!("{}/{}/", d.target, d.id);
        // Objects first, the manifest last: the backup reappears only once it is whole.
        let mut keys: Vec<&str> = by_key
            .range(backup_prefix.as_str()..)
            .take_while(|(k, _)| k.starts_with(&backup_prefix))
            .map(|(k, _)| *k)
            .collect();
        keys.sort_by_key(|k| k.ends_with(keys::MANIFEST));
        for key in keys {
            let Some(k) = key_state(&by_key[key]) else {
                continue;
            };
            if k.on_top.is_empty() {
                continue;
            }
            if ctx.cancel.is_cancelled() {
                return Err(Error::interrupted("undelete"));
            }
            let r = restore_key(ctx, &d, &k).await?;
            d.restored.push(r);
        }
        tracing::info!(target = %d.target, id = %d.id, state = %d.state, objects = d.restored.len(), "backup undeleted");
        back.push(d);
    }
    Ok(back)
}

/// Make `k.keep` the current version of its key again.
async fn restore_key(ctx: &Context, d: &DeletedBackup, k: &KeyState<'_>) -> Result<Restored> {
    let store = ctx.store.as_ref();
    let what = |e: dr_store::StoreError, doing: String| {
        Error::from(e).context(format!(
            "{doing} of {} (backup {} of `{}`)",
            k.key, d.id, d.target
        ))
    };
    // Never try to delete a locked version: look first.
    let now = Utc::now();
    let mut locked = None;
    for v in &k.foreign {
        let r = store
            .version_retention(k.key, &v.version_id)
            .await
            .map_err(|e| {
                what(
                    e,
                    format!("reading the retention of version {}", v.version_id),
                )
            })?;
        if let Some(r) = r.filter(|r| r.until > now) {
            locked = Some((v.version_id.clone(), r));
            break;
        }
    }
    if let Some((newer, r)) = locked {
        // The newer version cannot go: copy the original on top, locked as it is.
        let retention = store
            .version_retention(k.key, &k.keep.version_id)
            .await
            .map_err(|e| {
                what(
                    e,
                    format!("reading the retention of version {}", k.keep.version_id),
                )
            })?
            .filter(|r| r.until > now);
        tracing::info!(
            "{}: the newer version {newer} is locked ({} until {}); copying version {} back on top",
            k.key,
            r.mode,
            r.until,
            k.keep.version_id
        );
        store
            .copy_version(k.key, &k.keep.version_id, retention.as_ref())
            .await
            .map_err(|e| what(e, format!("copying version {} back", k.keep.version_id)))?;
        return Ok(Restored {
            key: k.key.to_owned(),
            version_id: k.keep.version_id.clone(),
            action: "copied".into(),
            removed: Vec::new(),
        });
    }
    let mut removed = Vec::new();
    for v in k.on_top {
        store
            .delete_version(k.key, &v.version_id)
            .await
            .map_err(|e| {
                what(
                    e,
                    format!(
                        "removing the {} {}",
                        if v.delete_marker {
                            "delete marker"
                        } else {
                            "newer version"
                        },
                        v.version_id
                    ),
                )
            })?;
        removed.push(v.version_id.clone());
    }
    Ok(Restored {
        key: k.key.to_owned(),
        version_id: k.keep.version_id.clone(),
        action: if k.foreign.is_empty() {
            "removed_markers"
        } else {
            "removed_newer"
        }
        .into(),
        removed,
    })
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
            etag: (!marker).then(|| "e1".to_string()),
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

    fn put(key: &str, id: &str, latest: bool, size: u64, etag: &str, at: i64) -> ObjectVersion {
        ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            is_latest: latest,
            delete_marker: false,
            size,
            last_modified: chrono::DateTime::from_timestamp(at, 0),
            etag: Some(etag.into()),
        }
    }

    #[test]
    fn a_newer_version_with_other_bytes_is_an_overwrite() {
        let m = "app/20261120T030000Z/manifest.json";
        let d = "app/20261120T030000Z/data-1.zst.age";
        let versions = vec![
            // The data object: garbage on top of a multipart original.
            put(d, "d2", true, 7, "0badc0de", 300),
            put(d, "d1", false, 900, "abc-2", 100),
            // The manifest: another backup's manifest on top of dr's.
            put(m, "m2", true, 400, "ffff", 200),
            put(m, "m1", false, 420, "eeee", 100),
            // A retried write: same bytes twice, not an overwrite.
            put(
                "app/20261121T030000Z/manifest.json",
                "n2",
                true,
                10,
                "aaaa",
                101,
            ),
            put(
                "app/20261121T030000Z/manifest.json",
                "n1",
                false,
                10,
                "aaaa",
                100,
            ),
        ];
        let found = find_deleted(&versions);
        assert_eq!(found.len(), 1, "{found:?}");
        let b = &found[0];
        assert_eq!(b.state, "overwritten");
        assert_eq!(b.manifest_version, "m1");
        assert!(b.manifest_overwritten());
        assert!(b.markers.is_empty());
        let o: Vec<(&str, &str, Vec<&str>)> = b
            .overwritten
            .iter()
            .map(|o| {
                (
                    o.key.as_str(),
                    o.original_version.as_str(),
                    o.newer_versions.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(o, vec![(d, "d1", vec!["d2"]), (m, "m1", vec!["m2"])]);
        let note = b.overwritten_note().expect("note");
        assert!(
            note.contains("data-1.zst.age, manifest.json")
                && note.contains("dr undelete 20261120T030000Z"),
            "{note}"
        );
        // Once the original was copied back on top (a copy of a multipart object has a
        // single-part ETag, same size), the backup is whole again.
        let mut repaired = versions.clone();
        repaired.insert(0, put(d, "d3", true, 900, "1234", 400));
        repaired.insert(3, put(m, "m3", true, 420, "eeee", 400));
        for v in repaired.iter_mut() {
            if v.version_id == "d2" || v.version_id == "m2" {
                v.is_latest = false;
            }
        }
        assert!(
            find_deleted(&repaired).is_empty(),
            "{:?}",
            find_deleted(&repaired)
        );
    }

    #[test]
    fn deleted_and_overwritten() {
        let m = "app/20261120T030000Z/manifest.json";
        let versions = vec![
            v(m, "x", true, true),
            put(m, "m2", false, 5, "ffff", 200),
            put(m, "m1", false, 420, "eeee", 100),
        ];
        let found = find_deleted(&versions);
        assert_eq!(found[0].state, "deleted,overwritten");
        assert_eq!(found[0].manifest_version, "m1");
        assert_eq!(found[0].hidden_objects, 1);
        assert_eq!(found[0].markers.len(), 1);
    }
}
