//! S3 Object Lock: `[repository.object_lock]`, the retention of one object version, the
//! bucket's versioning and lock state, and object versions (delete markers included).
//!
//! The store never decides *what* to lock: callers pass a [`Retention`] to the `*_locked`
//! writes of [`crate::ObjectStore`]. dr-core locks every object of a backup and nothing else
//! (the run lock and the daemon beacons must stay deletable).

use std::fmt;

use chrono::{DateTime, Utc};

use crate::location::invalid_option;
use crate::StoreError;

/// The longest lock dr accepts (100 years): anything longer is a typo.
pub const MAX_LOCK_DAYS: u32 = 36_500;

/// S3 Object Lock retention modes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete or shorten the lock.
    Governance,
    /// Nobody, not even the account root, can delete the version or shorten its lock.
    Compliance,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        })
    }
}

/// `[repository.object_lock]`: every object of a backup is locked at least `days` from the
/// backup's start, with `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

pub(crate) const OBJECT_LOCK_HINT: &str = "write [repository.object_lock] with mode = \"compliance\" (or \"governance\") and days = N (1 to 36500), e.g. days = 14";

impl ObjectLock {
    /// `[repository.object_lock]` as written, checked.
    pub(crate) fn from_value(value: &toml::Value) -> Result<ObjectLock, StoreError> {
        let lock: ObjectLock =
            serde::Deserialize::deserialize(value.clone()).map_err(|e: toml::de::Error| {
                invalid_option(
                    "object_lock",
                    e.message().trim().to_owned(),
                    OBJECT_LOCK_HINT,
                )
            })?;
        if lock.days == 0 || lock.days > MAX_LOCK_DAYS {
            return Err(invalid_option(
                "object_lock.days",
                format!("{} is out of range", lock.days),
                OBJECT_LOCK_HINT,
            ));
        }
        Ok(lock)
    }

    /// The lock for an object written at (or belonging to a backup started at) `from`.
    pub fn retention_from(&self, from: DateTime<Utc>) -> Retention {
        Retention {
            mode: self.mode,
            until: from + chrono::Duration::days(i64::from(self.days)),
        }
    }

    pub fn duration(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.days))
    }
}

/// Object Lock retention of one object version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    /// Second resolution (S3 keeps no more).
    pub until: DateTime<Utc>,
}

/// Bucket versioning as S3 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    /// Never enabled.
    #[default]
    Off,
    Enabled,
    Suspended,
}

impl fmt::Display for Versioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Versioning::Off => "off",
            Versioning::Enabled => "enabled",
            Versioning::Suspended => "suspended",
        })
    }
}

/// What the bucket says about versioning and Object Lock.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct BucketLockState {
    pub versioning: Versioning,
    /// Object Lock enabled on the bucket (it can only be enabled at creation on most
    /// services, and it implies versioning).
    pub object_lock: bool,
    /// The bucket's default retention, e.g. "compliance 30 days"; `None` without one.
    pub default_retention: Option<String>,
    /// Why the state is unknown (the service does not implement the API, e.g.); `None` when
    /// the bucket answered.
    pub unknown: Option<String>,
    /// The S3 APIs these credentials may not call (AccessDenied): `GetBucketVersioning`,
    /// `GetObjectLockConfiguration`. Least-privilege keys (read, write, list) have neither;
    /// what they would have said keeps its default (see [`BucketLockState::versioned`]).
    pub denied: Vec<&'static str>,
}

impl BucketLockState {
    /// Does the bucket keep old versions (versioning enabled or suspended, or Object Lock)?
    /// `None` when it could not be read.
    pub fn versioned(&self) -> Option<bool> {
        if self.object_lock {
            return Some(true);
        }
        if self.unknown.is_some() || self.denied.contains(&API_VERSIONING) {
            return None;
        }
        Some(self.versioning != Versioning::Off)
    }

    /// Was the Object Lock configuration read? (Not when refused; with versioning off it
    /// need not be: Object Lock requires versioning.)
    pub fn object_lock_known(&self) -> bool {
        self.unknown.is_none() && !self.denied.contains(&API_OBJECT_LOCK)
    }
}

/// The S3 API that reads a bucket's versioning.
pub const API_VERSIONING: &str = "GetBucketVersioning";
/// The S3 API that reads a bucket's Object Lock configuration.
pub const API_OBJECT_LOCK: &str = "GetObjectLockConfiguration";

/// One version of an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Relative to the repository prefix.
    pub key: String,
    /// "null" for objects written while versioning was off.
    pub version_id: String,
    /// The current version of its key (what a plain GET returns, or the marker hiding it).
    pub is_latest: bool,
    pub delete_marker: bool,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    /// The ETag without quotes (`None` for delete markers or when the service gives none):
    /// the hex MD5 of a single-part object, `md5-N` for one written in N parts. Two versions
    /// with the same ETag and size hold the same bytes (a retried write); different ETags
    /// of the same kind mean different bytes.
    pub etag: Option<String>,
}

impl ObjectVersion {
    /// Written by a multipart upload (its ETag is `md5-N`, not the MD5 of its bytes).
    pub fn multipart(&self) -> bool {
        self.etag.as_deref().is_some_and(|e| e.contains('-'))
    }

    /// `self` holds the same bytes as `other`, as far as a listing can tell: same size, and
    /// the same ETag. When one was written in parts and the other in one piece (a copy of a
    /// multipart object, which [`crate::ObjectStore::copy_version`] makes), ETags cannot be
    /// compared and the size decides.
    pub fn same_content(&self, other: &ObjectVersion) -> bool {
        if self.delete_marker || other.delete_marker || self.size != other.size {
            return false;
        }
        match (&self.etag, &other.etag) {
            (Some(a), Some(b)) if self.multipart() == other.multipart() => a == b,
            (Some(_), Some(_)) => true,
            _ => self.version_id == other.version_id,
        }
    }
}
