//! `dr list` and `dr show`: the rows of the catalog with the retention tier that keeps each
//! backup, and one backup with what its encrypted details say. [`rows`] and [`tiers`] are
//! pure; [`run`] and [`show`] read the repository.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use dr_catalog::{BackupDetails, BackupId, ObjectRole, Policy};
use serde::{Serialize, Serializer};

use crate::repo::{self, BackupEntry, Catalog, DamagedBackup, Selector};
use crate::trust::Trust;
use crate::{Context, Error, Kind, Result};

/// What `dr list` says of a backup (docs/JSON.md, "States").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A complete backup.
    Ok,
    /// A complete backup dated beyond this host's clock (clock skew).
    FutureDated,
    /// Its manifest exists but cannot be used.
    Damaged,
    /// On a repository with `[repository.object_lock]`: its manifest or one of its objects
    /// was replaced by a newer version than dr wrote (see [`crate::undelete`]); `dr undelete`
    /// brings back the originals.
    Overwritten,
    /// Complete, but not signed by a key this host trusts (unsigned, bad signature, unknown
    /// key; see [`crate::trust`]): never latest, never restored or verified.
    Untrusted,
}

/// One element of `dr list --json` (docs/JSON.md): a complete backup (possibly
/// future-dated) or a damaged one, whose manifest fields are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListRow {
    /// Stored size.
    pub bytes: Option<u64>,
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: Option<DateTime<Utc>>,
    pub id: BackupId,
    /// Damaged backups only: the manifest's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `logical` (a dump) or `physical` (a base backup); `None` for damaged backups.
    pub kind: Option<String>,
    /// Seconds its newest verification took to restore it (fetch+decrypt and restore, see
    /// [`crate::rto`]); `None` when never verified or that verification failed.
    pub measured_restore_seconds: Option<f64>,
    /// One line saying what is wrong; `None` when `state` is ok.
    pub problem: Option<String>,
    /// Size before compression and encryption.
    pub raw_bytes: Option<u64>,
    /// Damaged backups only: why the manifest cannot be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The tiers that keep it (`newest,daily`…) or `prune`; `None` without retention and for
    /// damaged backups.
    pub retention: Option<String>,
    pub server_major: Option<u32>,
    pub server_version: Option<String>,
    /// The fingerprint (`SHA256:…`) of the key that signed it, when the signature is valid.
    pub signed_by: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: Option<DateTime<Utc>>,
    pub state: State,
    pub target: String,
    /// Who wrote it: `trusted`, `unsigned`, `bad_signature` or `unknown_key` (the manifest's
    /// signature checked against this host's trusted keys); `None` for damaged backups.
    pub trust: Option<String>,
    pub verification: Option<RowVerification>,
    /// With `verify.prove_within`: whether a passed proof is no older than that (a base
    /// backup's: a drill). Absent otherwise, and for damaged or untrusted backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven: Option<bool>,
    /// Physical backups only: the WAL they need, `START..STOP` on `timeline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<RowWal>,
}

/// `wal` of a [`ListRow`]: the WAL range a physical backup needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowWal {
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
}

impl std::fmt::Display for RowWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}..{} timeline {}",
            self.start_lsn, self.stop_lsn, self.timeline
        )
    }
}

/// `verification` of a [`ListRow`]: the newest one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowVerification {
    /// `passed` or `failed`; `untrusted` for a record not signed by a trusted key (it does not
    /// count as a verification).
    pub result: String,
    #[serde(serialize_with = "rfc3339_one")]
    pub verified_at: DateTime<Utc>,
}

fn rfc3339<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::time::format(*t)),
        None => s.serialize_none(),
    }
}

fn rfc3339_one<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format(*t))
}

/// Which retention tiers keep each complete backup, by (target, id): `prune` for one the
/// next `dr prune` deletes. Pure.
pub fn tiers(
    entries: &[BackupEntry],
    policy: &Policy,
    now: DateTime<Utc>,
) -> BTreeMap<(String, BackupId), String> {
    let mut out = BTreeMap::new();
    let targets: BTreeSet<&str> = entries.iter().map(|e| e.manifest.target.as_str()).collect();
    for t in targets {
        for d in crate::prune::plan::decisions(entries, t, policy, now) {
            let kept = if d.keep {
                // The JSON spelling (`newest_verified`), the same as `dr prune --json`.
                d.tiers
                    .iter()
                    .map(|t| t.json_name())
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                "prune".to_string()
            };
            out.insert((t.to_string(), d.id), kept);
        }
    }
    out
}

/// The rows of `dr list` at `now`, newest id first (then by target); `policy` is `None`
/// without retention. Pure.
pub fn rows(catalog: &Catalog, policy: Option<&Policy>, now: DateTime<Utc>) -> Vec<ListRow> {
    let tiers = policy
        .map(|p| tiers(&catalog.entries, p, now))
        .unwrap_or_default();
    let mut rows: Vec<ListRow> = catalog
        .entries
        .iter()
        .map(|e| complete_row(e, &tiers, now))
        .chain(catalog.damaged.iter().map(damaged_row))
        .collect();
    rows.sort_by(|a, b| b.id.cmp(&a.id).then_with(|| a.target.cmp(&b.target)));
    rows
}

fn complete_row(
    e: &BackupEntry,
    tiers: &BTreeMap<(String, BackupId), String>,
    now: DateTime<Utc>,
) -> ListRow {
    let m = &e.manifest;
    let (state, problem) = if m.id.is_future_dated(now) {
        (
            State::FutureDated,
            Some(format!(
                "future-dated: clock skew (dated {} ahead of this host's clock); never picked as latest",
                repo::dated_ahead(&m.id, now)
            )),
        )
    } else if !e.trust.is_trusted() {
        (
            State::Untrusted,
            Some(format!(
                "untrusted: {}; never picked as latest, refused by restore and verify",
                e.trust.reason()
            )),
        )
    } else {
        (State::Ok, None)
    };
    let (trust, signed_by) = match &e.trust {
        Trust::Trusted { key } => ("trusted", Some(key.clone())),
        Trust::Unsigned => ("unsigned", None),
        Trust::BadSignature { .. } => ("bad_signature", None),
        Trust::UnknownKey { key } => ("unknown_key", Some(key.clone())),
    };
    ListRow {
        proven: None,
        bytes: Some(m.stored_bytes()),
        finished_at: Some(m.finished_at),
        id: m.id,
        key: None,
        kind: Some(m.kind.as_str().to_string()),
        measured_restore_seconds: e
            .verification
            .as_ref()
            .and_then(crate::rto::measured_restore_seconds),
        problem,
        raw_bytes: Some(m.raw_bytes()),
        reason: None,
        retention: tiers.get(&(m.target.clone(), m.id)).cloned(),
        server_major: Some(m.server_major),
        server_version: Some(m.server_version.clone()),
        started_at: Some(m.started_at),
        state,
        target: m.target.clone(),
        trust: Some(trust.to_string()),
        signed_by,
        verification: match (&e.verification, &e.untrusted_verification) {
            (Some(v), _) => Some(RowVerification {
                result: v.result.clone(),
                verified_at: v.verified_at,
            }),
            (None, Some(u)) => Some(RowVerification {
                result: "untrusted".into(),
                verified_at: u.record.verified_at,
            }),
            (None, None) => None,
        },
        wal: m.physical.as_ref().map(|p| RowWal {
            timeline: p.timeline,
            start_lsn: p.start_lsn.to_string(),
            stop_lsn: p.stop_lsn.to_string(),
        }),
    }
}

fn damaged_row(d: &DamagedBackup) -> ListRow {
    ListRow {
        bytes: None,
        finished_at: None,
        id: d.id,
        key: Some(d.key.clone()),
        kind: None,
        measured_restore_seconds: None,
        problem: Some(format!("damaged: {}", d.reason)),
        raw_bytes: None,
        reason: Some(d.reason.clone()),
        retention: None,
        server_major: None,
        server_version: None,
        started_at: None,
        state: State::Damaged,
        target: d.target.clone(),
        trust: None,
        signed_by: None,
        verification: None,
        proven: None,
        wal: None,
    }
}

/// Flag the rows of backups with overwritten objects (from [`crate::undelete::find_deleted`]):
/// state `overwritten`, and a problem naming what was replaced and how to get it back. A
/// damaged row keeps its `key` and `reason`. Pure.
pub fn flag_overwritten(rows: &mut [ListRow], found: &[crate::undelete::DeletedBackup]) {
    for r in rows.iter_mut() {
        let Some(note) = found
            .iter()
            .find(|d| d.id == r.id && d.target == r.target)
            .and_then(|d| d.overwritten_note())
        else {
            continue;
        };
        r.state = State::Overwritten;
        r.problem = Some(match &r.reason {
            Some(reason) => format!("{note} (the current manifest: {reason})"),
            None => note,
        });
    }
}

/// Read the repository (one target, or all) and build the rows of `dr list` now, with the
/// configured retention (none, or an invalid one, leaves `retention` empty). With
/// `[repository.object_lock]`, one version listing per target flags overwritten backups.
pub async fn run(ctx: &Context, target: Option<&str>) -> Result<Vec<ListRow>> {
    let catalog = repo::catalog(ctx.store.as_ref(), target, &ctx.signing).await?;
    let policy = crate::prune::policy(ctx).ok();
    let now = Utc::now();
    let mut rows = rows(&catalog, policy.as_ref(), now);
    if let Some(within) = ctx.config.verify.prove_within {
        let window = chrono::Duration::seconds(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
        for r in &mut rows {
            let entry = catalog
                .entries
                .iter()
                .find(|e| e.manifest.id == r.id && e.manifest.target == r.target);
            r.proven = entry
                .filter(|e| e.trust.is_trusted())
                .map(|e| crate::proof::proven(e, now, window));
        }
    }
    if ctx.store.location().object_lock().is_some() {
        let targets: BTreeSet<&str> = rows.iter().map(|r| r.target.as_str()).collect();
        let mut found = Vec::new();
        for t in targets {
            found.extend(crate::undelete::deleted(ctx.store.as_ref(), Some(t)).await?);
        }
        flag_overwritten(&mut rows, &found);
    }
    Ok(rows)
}

/// One backup as `dr show` presents it: its manifest, newest verification and, when the
/// identity is configured, its decrypted details.
#[derive(Debug, Clone)]
pub struct Shown {
    pub entry: BackupEntry,
    pub details: Option<BackupDetails>,
}

/// `dr show --json`: the manifest's fields, `verification`, and `details` when decrypted.
impl Serialize for Shown {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut v = serde_json::to_value(&self.entry.manifest).map_err(S::Error::custom)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "verification".into(),
                serde_json::to_value(&self.entry.verification).map_err(S::Error::custom)?,
            );
            if let Some(d) = &self.details {
                obj.insert(
                    "details".into(),
                    serde_json::to_value(d).map_err(S::Error::custom)?,
                );
            }
        }
        v.serialize(s)
    }
}

/// Resolve `id` and, with the identity, decrypt what the backup holds (tables, row counts);
/// without it, or when the backup has no details object, `details` is `None`.
pub async fn show(ctx: &Context, id: &str, target: Option<&str>) -> Result<Shown> {
    let selector = Selector::parse(Some(id), None)?;
    let entry = repo::resolve(ctx.store.as_ref(), target, &selector, &ctx.signing).await?;
    let details = details(ctx, &entry).await?;
    Ok(Shown { entry, details })
}

async fn details(ctx: &Context, entry: &BackupEntry) -> Result<Option<BackupDetails>> {
    let (Some(_), Some(rec)) = (
        &ctx.config.encryption.identity_file,
        entry.manifest.object(ObjectRole::Details),
    ) else {
        return Ok(None);
    };
    let ids = ctx.identities()?;
    let bytes = ctx.store.get(&rec.key).await?;
    if dr_stream::sha256_hex(&bytes) != rec.sha256 {
        return Err(Error::new(
            Kind::Integrity,
            format!("checksum mismatch for `{}`", rec.key),
        ));
    }
    let plain = dr_stream::unseal(&bytes, &ids, &rec.key)?;
    Ok(serde_json::from_slice(&plain).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{damaged, entry, now, verified};

    fn policy() -> Policy {
        Policy {
            daily: 1,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            timezone: chrono_tz::UTC,
        }
    }

    fn catalog() -> Catalog {
        Catalog {
            entries: vec![
                entry("app", "20261222T030000Z"),
                entry("app", "20261122T020000Z"),
                entry("app", "20261122T010000Z"),
                verified(entry("app", "20261120T020000Z"), "passed", now()),
                entry("db", "20261122T020000Z"),
            ],
            damaged: vec![damaged("app", "20261121T020000Z", "not valid JSON (EOF)")],
        }
    }

    #[test]
    fn rows_newest_first_then_by_target_with_states() {
        let rows = rows(&catalog(), None, now());
        let order: Vec<(String, &str, State)> = rows
            .iter()
            .map(|r| (r.id.to_string(), r.target.as_str(), r.state))
            .collect();
        assert_eq!(
            order,
            [
                ("20261222T030000Z".into(), "app", State::FutureDated),
                ("20261122T020000Z".into(), "app", State::Ok),
                ("20261122T020000Z".into(), "db", State::Ok),
                ("20261122T010000Z".into(), "app", State::Ok),
                ("20261121T020000Z".into(), "app", State::Damaged),
                ("20261120T020000Z".into(), "app", State::Ok),
            ]
        );
        assert!(rows.iter().all(|r| r.retention.is_none()));
        assert!(rows[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("30d 0h ahead")));
        assert_eq!(rows[1].problem, None);
        assert_eq!(
            rows[4].problem.as_deref(),
            Some("damaged: not valid JSON (EOF)")
        );
        assert_eq!(rows[4].bytes, None);
        assert_eq!(
            rows[5].verification.as_ref().map(|v| v.result.as_str()),
            Some("passed")
        );
    }

    #[test]
    fn retention_tiers_per_backup() {
        let rows = rows(&catalog(), Some(&policy()), now());
        let tiers: Vec<(&str, Option<&str>)> = rows
            .iter()
            .map(|r| (r.target.as_str(), r.retention.as_deref()))
            .collect();
        assert_eq!(
            tiers,
            [
                ("app", Some("future")),
                ("app", Some("newest,daily")),
                ("db", Some("newest,daily")),
                ("app", Some("prune")),
                ("app", None),
                ("app", Some("newest_verified")),
            ]
        );
    }

    #[test]
    fn measured_restore_seconds_of_the_newest_verification() {
        let mut c = catalog();
        if let Some(v) = c.entries[3].verification.as_mut() {
            v.timings = [
                ("sandbox_start", 5.0),
                ("fetch_decrypt", 1.5),
                ("restore", 3.0),
                ("total", 12.0),
            ]
            .iter()
            .map(|(k, s)| (k.to_string(), *s))
            .collect();
        }
        let rows = rows(&c, None, now());
        assert_eq!(rows[5].measured_restore_seconds, Some(4.5));
        assert!(rows[..5]
            .iter()
            .all(|r| r.measured_restore_seconds.is_none()));
    }

    #[test]
    fn json_as_documented() {
        let rows = rows(&catalog(), Some(&policy()), now());
        let ok = serde_json::to_value(&rows[5]).expect("json");
        assert_eq!(
            ok,
            serde_json::json!({
                "retention": "newest_verified",
                "id": "20261120T020000Z",
                "target": "app",
                "state": "ok",
                "problem": null,
                "started_at": "2026-11-20T02:00:00Z",
                "finished_at": "2026-11-20T02:00:00Z",
                "bytes": 1,
                "raw_bytes": 1,
                "server_version": "17.2",
                "server_major": 17,
                "verification": {"result": "passed", "verified_at": "2026-11-22T03:00:00Z"},
                "measured_restore_seconds": null,
                "trust": "trusted",
                "signed_by": "SHA256:test",
                "kind": "logical",
            })
        );
        let bad = serde_json::to_value(&rows[4]).expect("json");
        assert_eq!(
            bad,
            serde_json::json!({
                "retention": null,
                "id": "20261121T020000Z",
                "target": "app",
                "state": "damaged",
                "problem": "damaged: not valid JSON (EOF)",
                "key": "app/20261121T020000Z/manifest.json",
                "reason": "not valid JSON (EOF)",
                "started_at": null,
                "finished_at": null,
                "bytes": null,
                "raw_bytes": null,
                "server_version": null,
                "server_major": null,
                "verification": null,
                "measured_restore_seconds": null,
                "trust": null,
                "signed_by": null,
                "kind": null,
            })
        );
        // Keys in the order `dr list --json` always printed them (alphabetical).
        let text = serde_json::to_string(&rows[4]).expect("json");
        assert_eq!(text, serde_json::to_string(&bad).expect("json"));
    }

    #[test]
    fn overwritten_backups_are_flagged() {
        use dr_store::ObjectVersion;
        let ver = |key: &str, id: &str, latest: bool, size: u64, etag: &str| ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            is_latest: latest,
            delete_marker: false,
            size,
            last_modified: None,
            etag: Some(etag.into()),
        };
        let found = crate::undelete::find_deleted(&[
            ver("app/20261121T020000Z/manifest.json", "b", true, 9, "b"),
            ver("app/20261121T020000Z/manifest.json", "a", false, 8, "a"),
            ver("app/20261122T010000Z/data-1.zst.age", "b", true, 9, "b"),
            ver("app/20261122T010000Z/data-1.zst.age", "a", false, 8, "a-1"),
            ver("app/20261122T010000Z/manifest.json", "a", true, 8, "a"),
        ]);
        let mut rows = rows(&catalog(), None, now());
        flag_overwritten(&mut rows, &found);
        let flagged: Vec<(String, State)> = rows
            .iter()
            .filter(|r| r.state == State::Overwritten)
            .map(|r| (r.id.to_string(), r.state))
            .collect();
        assert_eq!(
            flagged,
            [
                ("20261122T010000Z".into(), State::Overwritten),
                ("20261121T020000Z".into(), State::Overwritten),
            ]
        );
        let p = rows[3].problem.as_deref().unwrap_or_default();
        assert!(
            p.starts_with("overwritten: data-1.zst.age")
                && p.contains("dr undelete 20261122T010000Z"),
            "{p}"
        );
        let p = rows[4].problem.as_deref().unwrap_or_default();
        assert!(
            p.contains("manifest.json") && p.contains("not valid JSON"),
            "{p}"
        );
        assert_eq!(rows[4].reason.as_deref(), Some("not valid JSON (EOF)"));
        let json = serde_json::to_value(&rows[3]).expect("json");
        assert_eq!(json["state"], "overwritten");
    }
}
