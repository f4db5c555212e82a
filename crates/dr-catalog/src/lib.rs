//! The repository's catalog: backup ids, object keys, the manifest, verification records,
//! and retention.
//!
//! Everything here is pure: no I/O, no clock. Callers pass `now` and the data.
//!
//! Repository layout (keys relative to the repository prefix):
//!
//! ```text
//! {target}/{id}/pre-data.zst.age       pg_dump -Fc --section=pre-data, zstd, age (format 2)
//! {target}/{id}/data-{K}.zst.age       pg_dump -Fc --section=data, a share of the tables (K = 1..)
//! {target}/{id}/post-data.zst.age      pg_dump -Fc --section=post-data
//! {target}/{id}/dump.zst.age           format 1 (older backups): the whole pg_dump -Fc archive
//! {target}/{id}/globals.sql.zst.age    pg_dumpall --globals-only, zstd, age
//! {target}/{id}/details.json.zst.age   table names, row counts, sequences (never in plaintext)
//! {target}/{id}/manifest.json.sig      its signature (OpenSSH SSHSIG, dr-backup@v1), just before
//! {target}/{id}/manifest.json          written last: the commit point of the backup
//! {target}/{id}/verify/{time}.json     verification records (plain summary), each with a .sig
//! locks/{target}.json                  run lock (conditional create)
//! {target}/wal/…                       archived WAL: data objects and signed records (see [`wal`])
//! daemon/{host}.json                   a running `dr daemon`'s beacon
//! ```
//!
//! ```
//! use dr_catalog::BackupId;
//! let id: BackupId = "20261122T030000Z".parse().unwrap();
//! assert_eq!(dr_catalog::keys::manifest("app", &id), "app/20261122T030000Z/manifest.json");
//! ```

pub mod beacon;
mod crosscheck;
pub mod manifest;
pub mod members;
pub mod retention;
pub mod schedule;
pub mod time;
mod verification;
pub mod wal;

pub use crosscheck::cross_check;

/// Human byte sizes for messages (`1.5 MiB`): the one rendering dr uses everywhere.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
pub use manifest::{
    BackupDetails, BackupKind, CheckOutcome, Chunk, DrillFacts, Layout, Manifest, ObjectRecord,
    ObjectRole, Physical, SequenceValue, TableCount, VerificationRecord, MANIFEST_FORMAT,
    MANIFEST_FORMAT_CHUNKED, MANIFEST_FORMAT_PHYSICAL, MANIFEST_FORMAT_PHYSICAL_CHUNKED,
    MANIFEST_FORMAT_SINGLE, NEWEST_MANIFEST_FORMAT, STEP_DATA, STEP_POST_DATA, STEP_PRE_DATA,
};
pub use retention::{plan as retention_plan, Decision, Policy, Tier};

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A backup's id: its start time in UTC, `YYYYMMDDTHHMMSSZ`. Sorts by time as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(DateTime<Utc>);

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// How far after `now` a backup's time may lie and still count as taken "now": clocks of the
/// backup host and of the host reading the repository differ by seconds (NTP) or a minute or
/// two (a VM resumed from suspend). Beyond this a backup is future-dated: its host's clock was
/// ahead (or this host's clock is behind), and its id says nothing about when it was taken.
pub const CLOCK_SKEW_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl BackupId {
    pub fn from_time(t: DateTime<Utc>) -> BackupId {
        // Whole seconds: the id is the key, sub-seconds would not survive the round trip.
        let secs = t.timestamp();
        BackupId(Utc.timestamp_opt(secs, 0).single().unwrap_or(t))
    }
    pub fn time(&self) -> DateTime<Utc> {
        self.0
    }
    /// Dated more than [`CLOCK_SKEW_ALLOWANCE`] after `now`: taken with a clock that was ahead.
    /// Such a backup is never `latest`, never the newest for retention, and is reported.
    pub fn is_future_dated(&self, now: DateTime<Utc>) -> bool {
        let allowance = chrono::Duration::from_std(CLOCK_SKEW_ALLOWANCE)
            .unwrap_or_else(|_| chrono::Duration::minutes(5));
        self.0 > now + allowance
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format(ID_FORMAT))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a backup id (expected e.g. 20261122T030000Z, or `latest`)")]
pub struct BadBackupId(pub String);

impl FromStr for BackupId {
    type Err = BadBackupId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NaiveDateTime::parse_from_str(s, ID_FORMAT)
            .map(|n| BackupId(n.and_utc()))
            .map_err(|_| BadBackupId(s.to_string()))
    }
}

impl Serialize for BackupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BackupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Object keys, in one place so the layout above is the only truth.
pub mod keys {
    use super::BackupId;

    pub const MANIFEST: &str = "manifest.json";
    pub const DUMP: &str = "dump.zst.age";
    pub const PRE_DATA: &str = "pre-data.zst.age";
    pub const POST_DATA: &str = "post-data.zst.age";
    /// The name of data stream `k` (from 1).
    pub fn data_stream(k: u32) -> String {
        format!("data-{k}.zst.age")
    }
    pub const GLOBALS: &str = "globals.sql.zst.age";
    pub const DETAILS: &str = "details.json.zst.age";
    /// A physical backup: `pg_basebackup -D - -Ft`'s tar stream.
    pub const BASE_TAR: &str = "base.tar.zst.age";
    /// A physical backup: PostgreSQL's `backup_manifest`.
    pub const BACKUP_MANIFEST: &str = "backup_manifest.zst.age";

    pub fn backup_prefix(target: &str, id: &BackupId) -> String {
        format!("{target}/{id}/")
    }
    pub fn object(target: &str, id: &BackupId, name: &str) -> String {
        format!("{target}/{id}/{name}")
    }
    /// Object `n` (from 2) of a section stored as several: `data-1.zst.age.0002`. The
    /// first keeps the section's own key, so `ls data-1.zst.age*` lists them in order
    /// (up to 9,999 objects: 50 TB of one stream) and `cat` of them is the stream.
    pub fn chunk(first: &str, n: u32) -> String {
        format!("{first}.{n:04}")
    }
    pub fn manifest(target: &str, id: &BackupId) -> String {
        object(target, id, MANIFEST)
    }
    pub fn verification(target: &str, id: &BackupId, at: &str) -> String {
        format!("{target}/{id}/verify/{at}.json")
    }
    pub fn verification_details(target: &str, id: &BackupId, at: &str) -> String {
        format!("{target}/{id}/verify/{at}.details.zst.age")
    }
    pub fn lock(target: &str) -> String {
        format!("locks/{target}.json")
    }
    /// Where `dr daemon` on `host` says it is alive.
    pub const DAEMON_PREFIX: &str = "daemon/";
    pub fn daemon_beacon(host: &str) -> String {
        format!("{DAEMON_PREFIX}{host}.json")
    }

    /// `(target, id, rest)` for a key in the layout, `None` for anything else.
    pub fn parse(key: &str) -> Option<(&str, BackupId, &str)> {
        let mut parts = key.splitn(3, '/');
        let target = parts.next()?;
        let id = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        Some((target, id, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a: BackupId = "20261122T030000Z".parse().expect("id");
        let b: BackupId = "20261123T010000Z".parse().expect("id");
        assert!(a < b);
        assert_eq!(a.to_string(), "20261122T030000Z");
        assert!("2026-11-22".parse::<BackupId>().is_err());
    }

    #[test]
    fn future_dated_means_beyond_the_allowance() {
        let now: BackupId = "20261122T030000Z".parse().expect("id");
        let now = now.time();
        let at = |s: &str| s.parse::<BackupId>().expect("id");
        assert!(!at("20261122T030000Z").is_future_dated(now));
        assert!(!at("20261121T030000Z").is_future_dated(now));
        // A few minutes of drift between hosts is not skew.
        assert!(!at("20261122T030400Z").is_future_dated(now));
        assert!(!at("20261122T030500Z").is_future_dated(now));
        assert!(at("20261122T030501Z").is_future_dated(now));
        assert!(at("20261222T030000Z").is_future_dated(now));
    }

    #[test]
    fn keys_parse_back() {
        let id: BackupId = "20261122T030000Z".parse().expect("id");
        let k = keys::manifest("app", &id);
        assert_eq!(keys::parse(&k), Some(("app", id, "manifest.json")));
        assert_eq!(keys::parse("locks/app.json"), None);
        assert_eq!(keys::parse(&keys::daemon_beacon("db1")), None);
    }
}
