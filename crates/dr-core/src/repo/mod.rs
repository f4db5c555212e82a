//! The repository as a catalog: complete backups (those with a manifest), their latest
//! verification, the damaged ones, and picking one by id, `latest` or time.
//!
//! Two faults are handled here so that one bad backup never blocks the others:
//!
//! - A **damaged** backup has a manifest that was fetched but cannot be used: not valid JSON
//!   (truncated, overwritten), failing [`Manifest::check_at`], or a newer format. It is listed
//!   apart ([`Catalog::damaged`]), skipped by `latest` and `--at`, and selecting it by id is an
//!   integrity error. A manifest that could not be *fetched* (network, 5xx, permissions) is not
//!   damaged: the listing fails, it never comes back shorter.
//! - A **future-dated** backup (taken with a clock that was ahead, see
//!   [`BackupId::is_future_dated`]) is listed, but `latest` and `--at` skip it: otherwise it
//!   would shadow every newer backup until the real clock catches up.
//!
//! A third is about origin: an **untrusted** backup (its manifest unsigned, badly signed, or
//! signed by a key this host does not trust, see [`crate::trust`]) is listed with the reason,
//! skipped by `latest` and `--at`, left out of retention, and refused by restore and verify.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId, Manifest, VerificationRecord};
use dr_store::ObjectStore;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

mod read;

use read::{index, read_entry, Signatures};

use crate::trust::{Signing, Trust};
use crate::{Error, Kind, Result};

/// One complete backup.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    pub manifest: Manifest,
    /// The newest verification record, if any and if it is trusted (signed by a trusted key).
    pub verification: Option<VerificationRecord>,
    /// Whether the manifest is signed by a key this host trusts.
    pub trust: Trust,
    /// The newest verification record when it is not trusted: it does not count.
    pub untrusted_verification: Option<UntrustedRecord>,
}

/// A verification record not signed by a trusted key (forged, or from a host whose key is
/// not trusted here).
#[derive(Debug, Clone)]
pub struct UntrustedRecord {
    pub record: VerificationRecord,
    /// The record's key and why it is untrusted.
    pub reason: String,
}

/// A backup whose manifest exists but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedBackup {
    pub target: String,
    /// From the key: the manifest itself could not be trusted to say.
    pub id: BackupId,
    /// The manifest's key.
    pub key: String,
    /// Why it cannot be used, e.g. "not valid JSON: EOF while parsing … at line 12 column 3".
    pub reason: String,
}

/// What the repository holds: complete backups and damaged ones, each newest first.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub entries: Vec<BackupEntry>,
    pub damaged: Vec<DamagedBackup>,
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

/// RFC 3339, PostgreSQL's own `timestamptz` output (`2026-12-03 14:05:32.123456+00`, as
/// `select now()` prints it), `YYYY-MM-DD HH:MM[:SS]` (UTC) or a date (end of that day, UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // PostgreSQL prints the zone as +HH, +HH:MM or +HH:MM:SS; chrono's %#z reads +HH and +HH:MM.
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
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
        "`{s}` is not a time"
    )).with_hint("write RFC 3339 (2026-11-22T03:00:00Z), PostgreSQL's `2026-11-22 03:00:00.5+00`, `2026-11-22 03:00` (UTC) or a date (2026-11-22 = end of that day)"))
}

/// Every complete backup, newest first; `target` filters. Damaged backups are left out (see
/// [`catalog`]). A listing that fails is an error, never a shorter list.
pub async fn list(
    store: &dyn ObjectStore,
    target: Option<&str>,
    signing: &Signing,
) -> Result<Vec<BackupEntry>> {
    Ok(catalog(store, target, signing).await?.entries)
}

/// Every complete backup and every damaged one, newest first; `target` filters. A listing or
/// a manifest fetch that fails is an error, never a shorter list. Each manifest and newest
/// verification record is checked against `signing`'s trusted keys.
pub async fn catalog(
    store: &dyn ObjectStore,
    target: Option<&str>,
    signing: &Signing,
) -> Result<Catalog> {
    let objects = store
        .list(target.map(|t| format!("{t}/")).as_deref().unwrap_or(""))
        .await
        .map_err(|e| Error::from(e).context("listing the repository"))?;
    let signatures = Signatures {
        store,
        listed: objects
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| k.ends_with(".sig"))
            .collect(),
    };
    let (manifests, verifications) = index(&objects);
    let read: Vec<std::result::Result<BackupEntry, DamagedBackup>> = stream::iter(manifests)
        .map(|(target, id, key)| {
            read_entry(store, signing, &signatures, &verifications, target, id, key)
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut catalog = Catalog::default();
    for r in read {
        match r {
            Ok(e) => catalog.entries.push(e),
            Err(d) => catalog.damaged.push(d),
        }
    }
    catalog.entries.sort_by(|a, b| {
        b.manifest
            .id
            .cmp(&a.manifest.id)
            .then_with(|| a.manifest.target.cmp(&b.manifest.target))
    });
    catalog
        .damaged
        .sort_by(|a, b| b.id.cmp(&a.id).then_with(|| a.target.cmp(&b.target)));
    Ok(catalog)
}

/// Targets in the repository that are databases of the server target `server`
/// (`server.DATABASE`, see [`dr_catalog::members`]), in name order.
pub async fn members(ctx: &crate::Context, server: &str) -> Result<Vec<String>> {
    let objects = ctx
        .store
        .list(&format!("{server}."))
        .await
        .map_err(|e| Error::from(e).context("listing the repository"))?;
    let names: BTreeSet<String> = objects
        .iter()
        .filter_map(|o| keys::parse(&o.key).map(|(t, _, _)| t))
        .filter(|t| {
            dr_catalog::members::server_of(t) == Some(server)
                && dr_catalog::members::valid_target_name(t)
        })
        .map(str::to_string)
        .collect();
    Ok(names.into_iter().collect())
}

/// The manifest stored at `key`, or why it cannot be used (the backup is damaged). Pure.
pub fn parse_manifest(key: &str, bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let m = Manifest::from_json(bytes)?;
    m.check_at(key)?;
    Ok(m)
}

/// Fetch and check one manifest; a damaged one is an integrity error.
pub async fn read_manifest(store: &dyn ObjectStore, key: &str) -> Result<Manifest> {
    let bytes = store.get(key).await?;
    parse_manifest(key, &bytes).map_err(|reason| {
        Error::new(Kind::Integrity, format!("manifest `{key}`: {reason}"))
            .with_hint("the repository was modified by something other than dr")
    })
}

/// How far after `now` a backup is dated, for messages: "30d 2h", "3h 10m", "12m".
pub fn dated_ahead(id: &BackupId, now: DateTime<Utc>) -> String {
    let d = id.time() - now;
    let (days, hours, minutes) = (d.num_days(), d.num_hours() % 24, d.num_minutes() % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m")
    }
}

/// Pick one backup. Without `target`, ids are searched across targets and `latest` needs the
/// repository to hold a single target. `latest` and `--at` skip damaged and future-dated
/// backups; naming a damaged backup by id is an integrity error.
pub async fn resolve(
    store: &dyn ObjectStore,
    target: Option<&str>,
    selector: &Selector,
    signing: &Signing,
) -> Result<BackupEntry> {
    catalog(store, target, signing)
        .await?
        .pick(target, selector, Utc::now())
}

impl Catalog {
    /// Complete trusted backups that are not future-dated at `now`, newest first: what
    /// `latest` and "the newest backup" mean.
    pub fn current(&self, now: DateTime<Utc>) -> impl Iterator<Item = &BackupEntry> {
        self.entries
            .iter()
            .filter(move |e| !e.manifest.id.is_future_dated(now) && e.trust.is_trusted())
    }

    /// Prune keeps untrusted backups of `target` and says so: retention does not count them.
    pub fn warn_untrusted_kept(&self, target: &str) {
        for e in self.untrusted().filter(|e| e.manifest.target == target) {
            tracing::warn!(
                "backup {} of `{target}` is untrusted ({}): kept, and not counted by retention (it holds no tier and makes no trusted backup go)",
                e.manifest.id,
                e.trust.reason()
            );
        }
    }

    /// Complete backups this host does not trust, newest first.
    pub fn untrusted(&self) -> impl Iterator<Item = &BackupEntry> {
        self.entries.iter().filter(|e| !e.trust.is_trusted())
    }

    /// Complete backups dated beyond `now` plus the clock-skew allowance, newest first.
    pub fn future_dated(&self, now: DateTime<Utc>) -> impl Iterator<Item = &BackupEntry> {
        self.entries
            .iter()
            .filter(move |e| e.manifest.id.is_future_dated(now))
    }

    /// `--id ID`: that backup, unless it is damaged or several targets have one.
    fn pick_id(self, target: Option<&str>, id: &BackupId) -> Result<BackupEntry> {
        let of_target = |t: &str| target.is_none_or(|only| only == t);
        let good = self
            .entries
            .iter()
            .filter(|e| e.manifest.id == *id && of_target(&e.manifest.target))
            .count();
        let damaged: Vec<&DamagedBackup> = self
            .damaged
            .iter()
            .filter(|d| d.id == *id && of_target(&d.target))
            .collect();
        if good + damaged.len() > 1 {
            return Err(
                Error::config(format!("backup {id} exists for several targets"))
                    .with_hint("add --target NAME"),
            );
        }
        if let Some(d) = damaged.first() {
            return Err(Error::new(
                Kind::Integrity,
                format!(
                    "backup {} of target `{}` is damaged: manifest `{}`: {}",
                    d.id, d.target, d.key, d.reason
                ),
            ).with_hint("restore another backup (`dr list` shows them); `dr prune --force` deletes this one"));
        }
        self.entries
            .into_iter()
            .find(|e| e.manifest.id == *id && of_target(&e.manifest.target))
            .ok_or_else(|| {
                Error::new(Kind::Failed, format!("no complete backup {id}"))
                    .with_hint("`dr list` shows the backups that exist")
            })
    }

    /// No backup at all, or backups of several targets and no `--target`: an error naming
    /// what to do.
    fn refuse_empty_or_ambiguous(&self, target: Option<&str>) -> Result<()> {
        if self.entries.is_empty() && self.damaged.is_empty() {
            return Err(Error::new(
                Kind::Failed,
                format!(
                    "no complete backups{} in the repository",
                    target
                        .map(|t| format!(" of target `{t}`"))
                        .unwrap_or_default()
                ),
            )
            .with_hint("run `dr backup` first; `dr list` shows what exists"));
        }
        if target.is_none() {
            let mut targets: Vec<&str> = self
                .entries
                .iter()
                .map(|e| e.manifest.target.as_str())
                .collect();
            targets.sort_unstable();
            targets.dedup();
            if targets.len() > 1 {
                return Err(Error::config(format!(
                    "the repository holds backups of several targets ({})",
                    targets.join(", ")
                ))
                .with_hint("add --target NAME"));
            }
        }
        Ok(())
    }

    /// Why nothing matched `latest` / `--at`: the oldest backup when `--at` is before it, the
    /// future-dated ones passed over, or where to look.
    fn nothing_at(
        &self,
        selector: &Selector,
        what: &str,
        future: &[&BackupEntry],
        now: DateTime<Utc>,
    ) -> Error {
        // `--at` before the first backup: name the oldest, the nearest there is.
        let oldest = match selector {
            Selector::At(_) => self.current(now).last(),
            _ => None,
        };
        let hint = if let Some(o) = oldest {
            format!(
                "the oldest backup of `{}` is {} ({}): restore it by its id, or pass a later --at; `dr list` shows them all",
                o.manifest.target,
                o.manifest.id,
                o.manifest
                    .id
                    .time()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        } else if future.is_empty() {
            "`dr list` shows the backups that exist".to_string()
        } else {
            format!(
                "future-dated backups (clock skew) are never `latest`: {}; restore one by its id if you mean it",
                future
                    .iter()
                    .map(|e| e.manifest.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Error::new(Kind::Failed, format!("no complete backup {what}")).with_hint(hint)
    }

    /// [`resolve`] on a catalog already read, at `now`. Pure.
    pub fn pick(
        self,
        target: Option<&str>,
        selector: &Selector,
        now: DateTime<Utc>,
    ) -> Result<BackupEntry> {
        if let Selector::Id(id) = selector {
            return self.pick_id(target, id);
        }
        self.refuse_empty_or_ambiguous(target)?;
        let wanted = |id: &BackupId| match selector {
            Selector::At(t) => id.time() <= *t,
            _ => true,
        };
        let chosen = self.entries.iter().position(|e| {
            !e.manifest.id.is_future_dated(now) && e.trust.is_trusted() && wanted(&e.manifest.id)
        });
        let chosen_id = chosen.map(|i| self.entries[i].manifest.id);
        // Newer than the one picked but not trusted here: never `latest`, always said.
        let untrusted: Vec<&BackupEntry> = self
            .untrusted()
            .filter(|e| {
                !e.manifest.id.is_future_dated(now)
                    && wanted(&e.manifest.id)
                    && chosen_id.is_none_or(|c| e.manifest.id > c)
            })
            .collect();
        for e in &untrusted {
            tracing::warn!(
                "skipping backup {} of `{}`: untrusted ({})",
                e.manifest.id,
                e.manifest.target,
                e.trust.reason()
            );
        }
        // Newer than the one picked, but passed over: say so, the operator may expect them.
        let future: Vec<&BackupEntry> = self
            .future_dated(now)
            .filter(|e| wanted(&e.manifest.id))
            .collect();
        for e in &future {
            tracing::warn!(
                "skipping backup {} of `{}`: it is dated in the future (clock skew on the host that took it?); restore it by its id if you mean it",
                e.manifest.id,
                e.manifest.target
            );
        }
        let skipped: Vec<&DamagedBackup> = self
            .damaged
            .iter()
            .filter(|d| wanted(&d.id) && chosen_id.is_none_or(|c| d.id > c))
            .collect();
        for d in &skipped {
            tracing::warn!(
                "skipping backup {} of `{}`: damaged ({})",
                d.id,
                d.target,
                d.reason
            );
        }
        let what = match selector {
            Selector::At(t) => format!("at or before {}", t.to_rfc3339()),
            _ => "latest".to_string(),
        };
        match chosen {
            Some(i) => {
                let mut entries = self.entries;
                Ok(entries.swap_remove(i))
            }
            None if !untrusted.is_empty() => Err(Error::new(
                Kind::Integrity,
                format!(
                    "no trusted backup {what}: {}",
                    untrusted
                        .iter()
                        .map(|e| format!("{} is untrusted ({})", e.manifest.id, e.trust.reason()))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ).with_hint("`dr list` shows every backup and whether it is trusted; name an older unsigned one by id with --trust-unsigned only if it predates signing")),
            None if !skipped.is_empty() => Err(Error::new(
                Kind::Integrity,
                format!(
                    "no usable backup {what}: {}",
                    skipped
                        .iter()
                        .map(|d| format!("{} is damaged ({})", d.id, d.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ).with_hint("`dr list` shows every backup and why it is damaged")),
            None => Err(self.nothing_at(selector, &what, &future, now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_documented_forms() {
        assert!(parse_time("2026-11-22T03:00:00Z").is_ok());
        assert!(parse_time("2026-11-22T03:00:00+01:00").is_ok());
        assert!(parse_time("2026-11-22 03:00").is_ok());
        // As PostgreSQL prints a timestamptz (what an operator copies from psql).
        let pg = parse_time("2026-12-04 03:19:30.276005+00").expect("postgres output");
        assert_eq!(pg.to_rfc3339(), "2026-12-04T03:19:30.276005+00:00");
        let east = parse_time("2026-12-04 04:19:30+01").expect("offset hours");
        assert_eq!(east.to_rfc3339(), "2026-12-04T03:19:30+00:00");
        assert!(parse_time("2026-12-04 03:19:30.5").is_ok());
        let d = parse_time("2026-11-22").expect("date");
        assert_eq!(d.to_rfc3339(), "2026-11-22T23:59:59+00:00");
        assert!(parse_time("yesterday").is_err());
    }

    use crate::testing::entry;

    fn manifest(target: &str, id: &str) -> Manifest {
        entry(target, id).manifest
    }

    fn damaged(target: &str, id: &str) -> DamagedBackup {
        let id: BackupId = id.parse().expect("id");
        DamagedBackup {
            target: target.into(),
            id,
            key: keys::manifest(target, &id),
            reason: "not valid JSON (EOF while parsing an object at line 3 column 0)".into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse::<BackupId>().expect("id").time()
    }

    fn picked(c: &Catalog, selector: &Selector, now: &str) -> Result<String> {
        c.clone()
            .pick(None, selector, at(now))
            .map(|e| e.manifest.id.to_string())
    }

    #[test]
    fn latest_skips_damaged_and_future_dated_backups() {
        let c = Catalog {
            entries: vec![
                entry("app", "20261222T030000Z"), // the clock was 30 days ahead
                entry("app", "20261121T030000Z"),
                entry("app", "20261120T030000Z"),
            ],
            damaged: vec![damaged("app", "20261121T150000Z")],
        };
        let now = "20261122T010000Z";
        assert_eq!(
            picked(&c, &Selector::Latest, now).expect("latest"),
            "20261121T030000Z"
        );
        assert_eq!(
            picked(&c, &Selector::At(at("20261220T000000Z")), now).expect("at"),
            "20261121T030000Z"
        );
        assert_eq!(
            picked(&c, &Selector::At(at("20261121T000000Z")), now).expect("at"),
            "20261120T030000Z"
        );
        // Once the clock passes it, it is an ordinary backup.
        assert_eq!(
            picked(&c, &Selector::Latest, "20261222T030000Z").expect("latest"),
            "20261222T030000Z"
        );
    }

    /// Regression: `--at` before the first backup did not say which backup is the oldest.
    #[test]
    fn at_before_the_first_backup_names_the_oldest() {
        let c = Catalog {
            entries: vec![
                entry("app", "20261121T030000Z"),
                entry("app", "20261120T030000Z"),
            ],
            damaged: vec![],
        };
        let e = picked(
            &c,
            &Selector::At(at("20261101T000000Z")),
            "20261122T010000Z",
        )
        .expect_err("before the first");
        assert_eq!(e.kind, Kind::Failed);
        let text = e.to_string();
        assert!(
            text.contains("the oldest backup of `app` is 20261120T030000Z (2026-11-20T03:00:00Z)"),
            "{text}"
        );
    }

    #[test]
    fn a_damaged_backup_named_by_id_is_an_integrity_error() {
        let c = Catalog {
            entries: vec![entry("app", "20261120T030000Z")],
            damaged: vec![damaged("app", "20261119T030000Z")],
        };
        let id = Selector::Id("20261119T030000Z".parse().expect("id"));
        let e = picked(&c, &id, "20261122T010000Z").expect_err("damaged");
        assert_eq!(e.kind, Kind::Integrity);
        assert!(e.to_string().contains("EOF while parsing"), "{e}");
        assert!(e.to_string().contains("app/20261119T030000Z/manifest.json"));
        let good = Selector::Id("20261120T030000Z".parse().expect("id"));
        assert!(picked(&c, &good, "20261122T010000Z").is_ok());
    }

    #[test]
    fn a_future_dated_backup_can_be_named_by_id() {
        let c = Catalog {
            entries: vec![entry("app", "20261222T030000Z")],
            damaged: vec![],
        };
        let id = Selector::Id("20261222T030000Z".parse().expect("id"));
        assert!(picked(&c, &id, "20261122T010000Z").is_ok());
        let e = picked(&c, &Selector::Latest, "20261122T010000Z").expect_err("future only");
        assert_eq!(e.kind, Kind::Failed);
        assert!(e.to_string().contains("20261222T030000Z"), "{e}");
    }

    #[test]
    fn only_damaged_backups_left_is_an_integrity_error() {
        let c = Catalog {
            entries: vec![entry("app", "20261101T030000Z")],
            damaged: vec![damaged("app", "20261120T030000Z")],
        };
        // Latest still finds the older good one.
        assert!(picked(&c, &Selector::Latest, "20261122T010000Z").is_ok());
        let c = Catalog {
            entries: vec![],
            damaged: vec![damaged("app", "20261120T030000Z")],
        };
        let e = picked(&c, &Selector::Latest, "20261122T010000Z").expect_err("none");
        assert_eq!(e.kind, Kind::Integrity);
    }

    #[test]
    fn damaged_in_another_target_does_not_make_latest_ambiguous() {
        let c = Catalog {
            entries: vec![entry("app", "20261120T030000Z")],
            damaged: vec![damaged("other", "20261121T030000Z")],
        };
        assert!(picked(&c, &Selector::Latest, "20261122T010000Z").is_ok());
    }

    #[test]
    fn manifests_that_cannot_be_used_say_why() {
        let m = manifest("app", "20261120T030000Z");
        let key = keys::manifest("app", &m.id);
        let json = serde_json::to_vec(&m).expect("json");
        assert!(parse_manifest(&key, &json).is_ok());
        let e = parse_manifest(&key, &json[..json.len() / 2]).expect_err("truncated");
        assert!(e.starts_with("not valid JSON"), "{e}");
        assert!(parse_manifest(&key, b"").is_err());
        let mut newer = m.clone();
        newer.format = dr_catalog::NEWEST_MANIFEST_FORMAT + 1;
        let e =
            parse_manifest(&key, &serde_json::to_vec(&newer).expect("json")).expect_err("newer");
        assert!(e.contains("upgrade dr"), "{e}");
        let e = parse_manifest(
            "app/20261121T030000Z/manifest.json",
            &serde_json::to_vec(&m).expect("json"),
        )
        .expect_err("moved");
        assert!(e.contains("20261120T030000Z"), "{e}");
    }

    #[test]
    fn how_far_ahead_reads_well() {
        let now = at("20261122T030000Z");
        let id = |s: &str| s.parse::<BackupId>().expect("id");
        assert_eq!(dated_ahead(&id("20261222T050000Z"), now), "30d 2h");
        assert_eq!(dated_ahead(&id("20261122T061000Z"), now), "3h 10m");
        assert_eq!(dated_ahead(&id("20261122T031200Z"), now), "12m");
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
