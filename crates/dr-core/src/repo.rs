//! The repository as a catalog: complete backups (those with a manifest), their latest
//! verification, and picking one by id, `latest` or time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId, Manifest, VerificationRecord};
use dr_store::ObjectStore;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::{Error, Kind, Result};

/// One complete backup.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    pub manifest: Manifest,
    /// The newest verification record, if any.
    pub verification: Option<VerificationRecord>,
}

/// How the operator names a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Id(BackupId),
    /// The newest backup started at or before this time.
    At(DateTime<Utc>),
}

impl Selector {
    /// `latest`, an id, or `None` for latest.
    pub fn parse(id: Option<&str>, at: Option<&str>) -> Result<Selector> {
        match (id, at) {
            (Some(_), Some(_)) if id != Some("latest") => {
                Err(Error::config("give either a backup id or --at, not both"))
            }
            (_, Some(t)) => Ok(Selector::At(parse_time(t)?)),
            (None, None) | (Some("latest"), None) => Ok(Selector::Latest),
            (Some(s), None) => s
                .parse()
                .map(Selector::Id)
                .map_err(|e: dr_catalog::BadBackupId| Error::config(e.to_string())),
        }
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM[:SS]` (UTC) or a date (end of that day, UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(23, 59, 59) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(id) = s.parse::<BackupId>() {
        return Ok(id.time());
    }
    Err(Error::config(format!(
        "`{s}` is not a time\nhint: write RFC 3339 (2026-11-22T03:00:00Z), `2026-11-22 03:00` (UTC) or a date (2026-11-22 = end of that day)"
    )))
}

/// Every complete backup, newest first; `target` filters. A listing that fails is an error,
/// never a shorter list.
pub async fn list(store: &dyn ObjectStore, target: Option<&str>) -> Result<Vec<BackupEntry>> {
    let objects = store
        .list(target.map(|t| format!("{t}/")).as_deref().unwrap_or(""))
        .await
        .map_err(|e| Error::from(e).context("listing the repository"))?;
    let mut manifests: Vec<String> = Vec::new();
    let mut verifications: BTreeMap<(String, BackupId), String> = BTreeMap::new();
    for o in &objects {
        if let Some((t, id, rest)) = keys::parse(&o.key) {
            if rest == keys::MANIFEST {
                manifests.push(o.key.clone());
            } else if let Some(name) = rest.strip_prefix("verify/") {
                if name.ends_with(".json") {
                    // Names are sortable times: keep the newest.
                    let slot = verifications.entry((t.to_string(), id)).or_default();
                    if o.key > *slot {
                        *slot = o.key.clone();
                    }
                }
            }
        }
    }
    let mut entries: Vec<BackupEntry> = stream::iter(manifests)
        .map(|key| {
            let verifications = &verifications;
            async move {
                let manifest = read_manifest(store, &key).await?;
                let verification = match verifications.get(&(manifest.target.clone(), manifest.id))
                {
                    Some(vkey) => match store.get(vkey).await {
                        Ok(b) => serde_json::from_slice(&b).ok(),
                        Err(e) => {
                            tracing::warn!("cannot read verification record {vkey}: {e}");
                            None
                        }
                    },
                    None => None,
                };
                Ok::<_, Error>(BackupEntry {
                    manifest,
                    verification,
                })
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    entries.sort_by(|a, b| {
        b.manifest
            .id
            .cmp(&a.manifest.id)
            .then_with(|| a.manifest.target.cmp(&b.manifest.target))
    });
    Ok(entries)
}

pub async fn read_manifest(store: &dyn ObjectStore, key: &str) -> Result<Manifest> {
    let bytes = store.get(key).await?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            Kind::Integrity,
            format!("manifest `{key}` is not valid JSON: {e}\nhint: the repository was modified by something other than dr"),
        )
    })?;
    m.check()
        .map_err(|e| Error::new(Kind::Integrity, format!("manifest `{key}`: {e}")))?;
    Ok(m)
}

/// Pick one backup. Without `target`, ids are searched across targets and `latest` needs the
/// repository to hold a single target.
pub async fn resolve(
    store: &dyn ObjectStore,
    target: Option<&str>,
    selector: &Selector,
) -> Result<BackupEntry> {
    let all = list(store, target).await?;
    if all.is_empty() {
        return Err(Error::new(
            Kind::Failed,
            format!(
                "no complete backups{} in the repository\nhint: run `dr backup` first; `dr list` shows what exists",
                target.map(|t| format!(" of target `{t}`")).unwrap_or_default()
            ),
        ));
    }
    if target.is_none() && !matches!(selector, Selector::Id(_)) {
        let mut targets: Vec<&str> = all.iter().map(|e| e.manifest.target.as_str()).collect();
        targets.dedup();
        targets.sort_unstable();
        targets.dedup();
        if targets.len() > 1 {
            return Err(Error::config(format!(
                "the repository holds backups of several targets ({})\nhint: add --target NAME",
                targets.join(", ")
            )));
        }
    }
    let found = match selector {
        Selector::Latest => all.into_iter().next(),
        Selector::Id(id) => {
            let mut matches: Vec<BackupEntry> =
                all.into_iter().filter(|e| e.manifest.id == *id).collect();
            if matches.len() > 1 {
                return Err(Error::config(format!(
                    "backup {id} exists for several targets\nhint: add --target NAME"
                )));
            }
            matches.pop()
        }
        Selector::At(t) => all.into_iter().find(|e| e.manifest.id.time() <= *t),
    };
    found.ok_or_else(|| {
        let what = match selector {
            Selector::Latest => "latest".to_string(),
            Selector::Id(id) => id.to_string(),
            Selector::At(t) => format!("at or before {}", t.to_rfc3339()),
        };
        Error::new(
            Kind::Failed,
            format!("no complete backup {what}\nhint: `dr list` shows the backups that exist"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_documented_forms() {
        assert!(parse_time("2026-11-22T03:00:00Z").is_ok());
        assert!(parse_time("2026-11-22T03:00:00+01:00").is_ok());
        assert!(parse_time("2026-11-22 03:00").is_ok());
        let d = parse_time("2026-11-22").expect("date");
        assert_eq!(d.to_rfc3339(), "2026-11-22T23:59:59+00:00");
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn selectors() {
        assert_eq!(
            Selector::parse(None, None).expect("latest"),
            Selector::Latest
        );
        assert_eq!(
            Selector::parse(Some("latest"), None).expect("latest"),
            Selector::Latest
        );
        assert!(matches!(
            Selector::parse(Some("20261122T030000Z"), None),
            Ok(Selector::Id(_))
        ));
        assert!(Selector::parse(Some("nope"), None).is_err());
    }
}
