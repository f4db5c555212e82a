//! The measured RTO: how long restoring a backup took when `dr verify` restored it, and the
//! estimate `dr restore` derives from it. All pure.
//!
//! What counts: the phases a real `dr restore` also goes through — `fetch_decrypt`
//! (download, checksum, decrypt, decompress into the local archive) and `restore`
//! (`pg_restore` and the row-count comparison). Starting and removing the sandbox and the
//! verification's own checks are left out: an operator restoring into a running server pays
//! for neither. Only a passed verification is a measurement: a restore that failed half-way
//! says nothing about how long a whole one takes.

use chrono::{DateTime, Utc};
use dr_catalog::{BackupId, VerificationRecord};
use serde::{Serialize, Serializer};

use crate::repo::BackupEntry;

/// The timings of a verification that a real restore incurs.
pub const COUNTED_PHASES: [&str; 2] = ["fetch_decrypt", "restore"];

/// Seconds a restore of the verified backup took: `fetch_decrypt` + `restore` of a passed
/// verification; `None` when it failed or was recorded without these timings.
pub fn measured_restore_seconds(v: &VerificationRecord) -> Option<f64> {
    if !v.passed() {
        return None;
    }
    let mut sum = 0.0;
    for phase in COUNTED_PHASES {
        let s = *v.timings.get(phase)?;
        if !s.is_finite() || s < 0.0 {
            return None;
        }
        sum += s;
    }
    Some(sum)
}

/// A restore time measured by a verification, and on which backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub backup_id: BackupId,
    /// [`measured_restore_seconds`] of its newest verification.
    pub seconds: f64,
    /// The size of that backup's archive (the dump, decompressed and decrypted).
    pub archive_bytes: u64,
    #[serde(serialize_with = "rfc3339")]
    pub verified_at: DateTime<Utc>,
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format(*t))
}

/// The measurement of one backup: its newest verification, if that has one.
pub fn measured(e: &BackupEntry) -> Option<Measured> {
    let v = e.verification.as_ref()?;
    Some(Measured {
        backup_id: e.manifest.id,
        seconds: measured_restore_seconds(v)?,
        archive_bytes: e.manifest.archive_raw_bytes(),
        verified_at: v.verified_at,
    })
}

/// The newest measurement (by verification time) among the backups of `target`.
pub fn newest<'a>(
    entries: impl IntoIterator<Item = &'a BackupEntry>,
    target: &str,
) -> Option<Measured> {
    entries
        .into_iter()
        .filter(|e| e.manifest.target == target)
        .filter_map(measured)
        .max_by_key(|m| (m.verified_at, m.backup_id))
}

/// What the newest passed drill of a target measured (`dr verify --pitr`): how fast its base
/// backup came down and unpacked, and how fast WAL replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillMeasured {
    /// The base backup drilled.
    pub backup_id: BackupId,
    #[serde(serialize_with = "rfc3339")]
    pub verified_at: DateTime<Utc>,
    pub base_bytes_per_second: f64,
    /// None when the drill replayed no whole segment's worth of WAL to measure.
    pub replay_bytes_per_second: Option<f64>,
    /// The recovery of that drill, from the server's start to the point.
    pub recover_seconds: f64,
}

/// The newest passed drill of `target` with its timings.
pub fn newest_drill<'a>(
    entries: impl IntoIterator<Item = &'a BackupEntry>,
    target: &str,
) -> Option<DrillMeasured> {
    entries
        .into_iter()
        .filter(|e| e.manifest.target == target)
        .filter_map(|e| {
            let v = e.verification.as_ref().filter(|v| v.passed())?;
            let d = v.drill.as_ref()?;
            let fetch = *v.timings.get("base_fetch")?;
            let recover = *v.timings.get("recover")?;
            let base = e
                .manifest
                .object(dr_catalog::ObjectRole::BaseTar)
                .map(|o| o.raw_bytes)?;
            (fetch > 0.0 && recover.is_finite()).then(|| DrillMeasured {
                backup_id: e.manifest.id,
                verified_at: v.verified_at,
                base_bytes_per_second: base as f64 / fetch,
                replay_bytes_per_second: d.replay_bytes_per_second(&v.timings),
                recover_seconds: recover,
            })
        })
        .max_by_key(|m| (m.verified_at, m.backup_id))
}

/// Seconds a sandbox recovery of `base_bytes` and `wal_bytes` of WAL should take, at the
/// rates `m` measured (the drill's whole recovery time when it measured no replay rate).
pub fn estimate_recovery(m: &DrillMeasured, base_bytes: u64, wal_bytes: u64) -> f64 {
    let base = base_bytes as f64 / m.base_bytes_per_second;
    let replay = match m.replay_bytes_per_second {
        Some(r) if r > 0.0 => wal_bytes as f64 / r,
        _ => m.recover_seconds,
    };
    base + replay
}

/// What `dr restore` expects a restore to take: a measurement, scaled to the size of the
/// archive about to be restored when the measured one differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// The estimate, in seconds.
    pub seconds: f64,
    /// The backup the time was measured on.
    pub measured_backup_id: BackupId,
    /// What that restore took.
    pub measured_seconds: f64,
    /// The archive size of the measured backup.
    pub measured_archive_bytes: u64,
    #[serde(serialize_with = "rfc3339")]
    pub measured_at: DateTime<Utc>,
    /// True when the time was scaled by archive size (the backups differ in size).
    pub scaled: bool,
}

/// The estimate for restoring an archive of `archive_bytes` from measurement `m`: linear in
/// the archive size (the measurement as is when either size is unknown or they are equal).
pub fn estimate(m: &Measured, archive_bytes: u64) -> Estimate {
    let scaled = m.archive_bytes > 0 && archive_bytes > 0 && m.archive_bytes != archive_bytes;
    let seconds = if scaled {
        m.seconds * archive_bytes as f64 / m.archive_bytes as f64
    } else {
        m.seconds
    };
    Estimate {
        seconds,
        measured_backup_id: m.backup_id,
        measured_seconds: m.seconds,
        measured_archive_bytes: m.archive_bytes,
        measured_at: m.verified_at,
        scaled,
    }
}

/// A duration for people: `42s`, `3m05s`, `1h02m`.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, now, verified};
    use chrono::Duration;

    fn timed(mut e: BackupEntry, phases: &[(&str, f64)], archive: u64) -> BackupEntry {
        if let Some(v) = e.verification.as_mut() {
            v.timings = phases.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        }
        e.manifest.objects[0].raw_bytes = archive;
        e
    }

    const ALL: [(&str, f64); 6] = [
        ("sandbox_start", 9.0),
        ("fetch_decrypt", 2.5),
        ("restore", 10.0),
        ("checks", 3.0),
        ("sandbox_stop", 1.0),
        ("total", 26.0),
    ];

    #[test]
    fn counts_fetch_decrypt_and_restore_of_a_passed_verification() {
        let e = timed(
            verified(entry("app", "20261122T020000Z"), "passed", now()),
            &ALL,
            1,
        );
        let v = e.verification.as_ref().expect("verified");
        assert_eq!(measured_restore_seconds(v), Some(12.5));
        let failed = timed(
            verified(entry("app", "20261122T020000Z"), "failed", now()),
            &ALL,
            1,
        );
        assert_eq!(
            measured_restore_seconds(failed.verification.as_ref().expect("v")),
            None
        );
        let old = timed(
            verified(entry("app", "20261122T020000Z"), "passed", now()),
            &[("total", 20.0)],
            1,
        );
        assert_eq!(
            measured_restore_seconds(old.verification.as_ref().expect("v")),
            None
        );
    }

    #[test]
    fn newest_measurement_of_the_target_by_verification_time() {
        let entries = vec![
            entry("app", "20261122T020000Z"),
            timed(
                verified(entry("app", "20261121T020000Z"), "failed", now()),
                &ALL,
                1,
            ),
            timed(
                verified(
                    entry("app", "20261120T020000Z"),
                    "passed",
                    now() - Duration::hours(1),
                ),
                &ALL,
                4,
            ),
            timed(
                verified(
                    entry("app", "20261119T020000Z"),
                    "passed",
                    now() - Duration::hours(2),
                ),
                &[("fetch_decrypt", 1.0), ("restore", 1.0)],
                4,
            ),
            timed(
                verified(entry("db", "20261122T020000Z"), "passed", now()),
                &ALL,
                4,
            ),
        ];
        let m = newest(&entries, "app").expect("measured");
        assert_eq!(m.backup_id.to_string(), "20261120T020000Z");
        assert_eq!(m.seconds, 12.5);
        assert_eq!(m.archive_bytes, 4);
        assert_eq!(newest(&entries, "other"), None);
        assert_eq!(newest(&entries[..2], "app"), None);
    }

    #[test]
    fn estimate_scales_by_archive_size() {
        let m = Measured {
            backup_id: "20261120T020000Z".parse().expect("id"),
            seconds: 100.0,
            archive_bytes: 1000,
            verified_at: now(),
        };
        let same = estimate(&m, 1000);
        assert!(!same.scaled);
        assert_eq!(same.seconds, 100.0);
        let bigger = estimate(&m, 1500);
        assert!(bigger.scaled);
        assert_eq!(bigger.seconds, 150.0);
        assert_eq!(bigger.measured_seconds, 100.0);
        let unknown = estimate(
            &Measured {
                archive_bytes: 0,
                ..m.clone()
            },
            1500,
        );
        assert!(!unknown.scaled);
        assert_eq!(unknown.seconds, 100.0);
        let json = serde_json::to_value(&bigger).expect("json");
        assert_eq!(json["measured_backup_id"], "20261120T020000Z");
        assert_eq!(json["measured_at"], "2026-11-22T03:00:00Z");
    }

    #[test]
    fn human() {
        assert_eq!(human_seconds(0.4), "0s");
        assert_eq!(human_seconds(42.4), "42s");
        assert_eq!(human_seconds(185.0), "3m05s");
        assert_eq!(human_seconds(3720.0), "1h02m");
    }
}
