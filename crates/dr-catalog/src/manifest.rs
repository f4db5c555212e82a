//! The manifest (plain JSON, written last) and the encrypted details it points to.
//!
//! The manifest holds only what `list`, retention and integrity checks need without the private
//! key: times, versions, sizes and digests. Anything derived from the data (table and sequence
//! names, row counts) lives in [`BackupDetails`], stored encrypted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::BackupId;

/// Bumped when a reader of an older dr could misread a newer manifest.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: BackupId,
    pub target: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `SHOW server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)".
    pub server_version: String,
    pub server_major: u32,
    /// `pg_dump --version` of the binary used.
    pub pg_dump_version: String,
    pub dr_version: String,
    /// `pg_database_size` at backup time, bytes.
    pub database_bytes: u64,
    pub compression: String,
    pub encryption: String,
    /// Public recipients the objects are encrypted to.
    pub recipients: Vec<String>,
    pub objects: Vec<ObjectRecord>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ObjectRole {
    /// `pg_dump -Fc` archive.
    Dump,
    /// `pg_dumpall --globals-only` SQL.
    Globals,
    /// [`BackupDetails`] JSON.
    Details,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRecord {
    pub role: ObjectRole,
    pub key: String,
    /// Stored (compressed, encrypted) size.
    pub bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Size before compression and encryption.
    pub raw_bytes: u64,
    /// Multipart part size used, if uploaded in parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_bytes: Option<u64>,
}

impl Manifest {
    pub fn object(&self, role: ObjectRole) -> Option<&ObjectRecord> {
        self.objects.iter().find(|o| o.role == role)
    }
    /// Stored bytes of all objects.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
    pub fn raw_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.raw_bytes).sum()
    }

    /// Problems a reader must refuse: a newer format, keys outside the backup, missing dump.
    pub fn check(&self) -> Result<(), String> {
        if self.format > MANIFEST_FORMAT {
            return Err(format!(
                "manifest format {} is newer than this dr understands ({MANIFEST_FORMAT}); upgrade dr",
                self.format
            ));
        }
        let prefix = crate::keys::backup_prefix(&self.target, &self.id);
        for o in &self.objects {
            if !o.key.starts_with(&prefix) {
                return Err(format!("object key `{}` lies outside `{prefix}`", o.key));
            }
            if o.sha256.len() != 64 || !o.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("object `{}` has no valid sha256", o.key));
            }
        }
        if self.object(ObjectRole::Dump).is_none() {
            return Err("manifest lists no dump object".into());
        }
        Ok(())
    }

    /// [`Manifest::check`], and that the manifest stored at `key` describes the backup that
    /// key names: a manifest copied or renamed to another backup's place is refused, since the
    /// id in the key is what listing, `latest` and retention go by.
    pub fn check_at(&self, key: &str) -> Result<(), String> {
        self.check()?;
        let expected = crate::keys::manifest(&self.target, &self.id);
        if key != expected {
            return Err(format!(
                "it describes backup {} of target `{}` (whose manifest is `{expected}`)",
                self.id, self.target
            ));
        }
        Ok(())
    }
}

/// What the dump holds, stored encrypted next to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackupDetails {
    pub format: u32,
    pub database: String,
    /// Exact rows per table, counted in the snapshot pg_dump used.
    pub tables: Vec<TableCount>,
    pub sequences: Vec<SequenceValue>,
    pub large_objects: u64,
    pub extensions: Vec<String>,
    /// Roles owning objects in the database: a restore target lacking them needs the globals.
    #[serde(default)]
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub rows: i64,
}

impl TableCount {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

impl BackupDetails {
    pub fn total_rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
    pub fn counts(&self) -> BTreeMap<String, i64> {
        self.tables
            .iter()
            .map(|t| (t.qualified(), t.rows))
            .collect()
    }
}

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
}

impl VerificationRecord {
    pub fn passed(&self) -> bool {
        self.result == "passed"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let id: BackupId = "20261122T030000Z".parse().expect("id");
        Manifest {
            format: MANIFEST_FORMAT,
            id,
            target: "app".into(),
            started_at: id.time(),
            finished_at: id.time(),
            server_version: "15.18".into(),
            server_major: 15,
            pg_dump_version: "pg_dump (PostgreSQL) 15.18".into(),
            dr_version: "0.1.0".into(),
            database_bytes: 1,
            compression: "zstd".into(),
            encryption: "age".into(),
            recipients: vec![],
            objects: vec![ObjectRecord {
                role: ObjectRole::Dump,
                key: "app/20261122T030000Z/dump.zst.age".into(),
                bytes: 10,
                sha256: "a".repeat(64),
                raw_bytes: 20,
                part_bytes: None,
            }],
        }
    }

    #[test]
    fn manifest_round_trips_and_checks() {
        let m = sample();
        let json = serde_json::to_string(&m).expect("json");
        let back: Manifest = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, m);
        assert!(m.check().is_ok());
    }

    #[test]
    fn foreign_keys_and_newer_formats_are_refused() {
        let mut m = sample();
        m.objects[0].key = "other/x".into();
        assert!(m.check().is_err());
        let mut m = sample();
        m.format = MANIFEST_FORMAT + 1;
        assert!(m.check().expect_err("newer").contains("upgrade"));
    }

    #[test]
    fn a_manifest_must_sit_at_its_own_key() {
        let m = sample();
        assert!(m.check_at("app/20261122T030000Z/manifest.json").is_ok());
        let e = m
            .check_at("app/20261222T030000Z/manifest.json")
            .expect_err("moved");
        assert!(e.contains("20261122T030000Z"), "{e}");
        assert!(m.check_at("other/20261122T030000Z/manifest.json").is_err());
    }
}
