//! Small catalogs for unit tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_catalog::MANIFEST_FORMAT;
use dr_catalog::{keys, BackupId, Manifest, ObjectRecord, ObjectRole, VerificationRecord};

use crate::repo::{BackupEntry, DamagedBackup};

/// A complete backup of `target` with id `id` (finished at its id's time), never verified.
pub(crate) fn entry(target: &str, id: &str) -> BackupEntry {
    let id: BackupId = id.parse().expect("id");
    BackupEntry {
        manifest: Manifest {
            format: MANIFEST_FORMAT,
            id,
            target: target.into(),
            started_at: id.time(),
            finished_at: id.time(),
            server_version: "17.2".into(),
            server_major: 17,
            pg_dump_version: "pg_dump (PostgreSQL) 17.2".into(),
            dr_version: "0.1.0".into(),
            database_bytes: 1,
            compression: "zstd".into(),
            encryption: "age".into(),
            recipients: vec![],
            objects: vec![ObjectRecord {
                role: ObjectRole::Dump,
                key: keys::object(target, &id, keys::DUMP),
                bytes: 1,
                sha256: "0".repeat(64),
                raw_bytes: 1,
                part_bytes: None,
                restore_step: None,
                chunks: Vec::new(),
            }],
            kind: dr_catalog::BackupKind::Logical,
            physical: None,
        },
        verification: None,
        trust: crate::trust::Trust::Trusted {
            key: "SHA256:test".into(),
        },
        untrusted_verification: None,
    }
}

/// A complete physical backup of `target` with id `id` on timeline 1, its WAL range
/// `start..stop` (`X/Y`).
pub(crate) fn physical(target: &str, id: &str, start: &str, stop: &str) -> BackupEntry {
    let mut e = entry(target, id);
    let m = &mut e.manifest;
    m.format = dr_catalog::MANIFEST_FORMAT_PHYSICAL;
    m.kind = dr_catalog::BackupKind::Physical;
    m.physical = Some(dr_catalog::Physical {
        system_identifier: "7301234567890123456".into(),
        timeline: 1,
        start_lsn: start.parse().expect("lsn"),
        stop_lsn: stop.parse().expect("lsn"),
        start_segment: String::new(),
        stop_segment: String::new(),
        segment_bytes: 16 << 20,
        checkpoint_lsn: start.parse().expect("lsn"),
        pg_basebackup_version: "pg_basebackup (PostgreSQL) 17.2".into(),
        backup_label: String::new(),
    });
    e
}

/// `e` with a verification record: `result` is "passed" or "failed".
pub(crate) fn verified(mut e: BackupEntry, result: &str, at: DateTime<Utc>) -> BackupEntry {
    e.verification = Some(VerificationRecord {
        format: 1,
        backup_id: e.manifest.id,
        target: e.manifest.target.clone(),
        verified_at: at,
        result: result.into(),
        checks_total: 3,
        checks_failed: u32::from(result != "passed"),
        timings: BTreeMap::new(),
        sandbox: "local".into(),
        dr_version: "0.1.0".into(),
        summary: None,
        drill: None,
    });
    e
}

/// A damaged backup of `target` with id `id`.
pub(crate) fn damaged(target: &str, id: &str, reason: &str) -> DamagedBackup {
    DamagedBackup {
        target: target.into(),
        id: id.parse().expect("id"),
        key: format!("{target}/{id}/manifest.json"),
        reason: reason.into(),
    }
}

/// 2026-11-22 03:00 UTC.
pub(crate) fn now() -> DateTime<Utc> {
    "20261122T030000Z".parse::<BackupId>().expect("id").time()
}
