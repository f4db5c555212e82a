//! What `dr verify` (and a drill, `dr verify --pitr`) records next to a backup: the plain,
//! signed record (no data names) and the encrypted outcome of each check.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::BackupId;

/// One verification of one backup: the plain part (no table names), stored next to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerificationRecord {
    pub format: u32,
    pub backup_id: BackupId,
    pub target: String,
    pub verified_at: DateTime<Utc>,
    /// "passed" or "failed".
    pub result: String,
    /// Counts only: which check failed is in the encrypted details.
    pub checks_total: u32,
    pub checks_failed: u32,
    /// Phase name -> seconds (fetch+decrypt, restore, checks, total): the measured RTO.
    pub timings: BTreeMap<String, f64>,
    pub sandbox: String,
    pub dr_version: String,
    /// A one-line reason without data names, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// A drill of a base backup (`dr verify --pitr`): where it recovered to and what that
    /// proves. None for a logical backup's verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillFacts>,
}

impl VerificationRecord {
    pub fn passed(&self) -> bool {
        self.result == "passed"
    }
}

/// What a drill proved, in the plain record (no data names): the window from the base
/// backup's end to the point it recovered to, and how fast.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillFacts {
    /// The recovery target as asked (`LSN 0/3000028 (exclusive)`, a time, `latest`).
    pub point: String,
    /// Why that point: `--at`, a dump's snapshot position, or a random point of the window.
    pub chosen: String,
    pub timeline: u32,
    /// The base backup's end: the window starts here.
    pub from: DateTime<Utc>,
    /// The last commit replayed: the window is proven up to here (none when recovery did
    /// not get that far, or replayed no commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// The dump whose exact row counts the recovered copy reproduced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_of: Option<BackupId>,
    pub wal_segments: u64,
    /// Bytes of WAL replayed (segments × segment size).
    pub wal_bytes: u64,
    /// Checks that could not run here, and why (e.g. no `pg_amcheck` for this major).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl DrillFacts {
    /// WAL replayed per second of recovery, from the record's `recover` timing.
    pub fn replay_bytes_per_second(&self, timings: &BTreeMap<String, f64>) -> Option<f64> {
        let s = *timings.get("recover")?;
        (s > 0.0 && self.wal_bytes > 0).then(|| self.wal_bytes as f64 / s)
    }
}

/// One check of a verification (encrypted: names tables).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckOutcome {
    pub check: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}
