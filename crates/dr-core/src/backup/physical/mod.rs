//! `dr backup --physical`: `pg_basebackup -D - -Ft -X none` → zstd → age → one multipart
//! upload (`base.tar.zst.age`), PostgreSQL's `backup_manifest` copied out of the passing tar
//! and stored beside it, then — once the WAL from the start to the stop LSN is in the
//! repository ([`wait_for_wal`]) — the format-3 manifest, signed, last.
//!
//! Nothing is staged on disk: the tar is read by [`dr_pg::basebackup::TarTap`] on the
//! encoder's blocking thread, one part in flight, as a dump's sections are.
//!
//! **Why the WAL wait, and what the server waits for itself.** A base backup without the WAL
//! written while it ran is not consistent (`docs/design/PITR.md`, trap 8). pg_basebackup
//! with `-X none` does not send `NOWAIT`, so `pg_backup_stop` switches to a new segment and,
//! when `archive_mode` is on, waits until the stop segment is archived: no `pg_switch_wal()`
//! is needed. If archiving fails it waits forever (printing "waiting for required WAL
//! segments to be archived"), so dr bounds that wait too: once pg_basebackup says it, it gets
//! the archive wait to finish, or is stopped. With `archive_mode` off (WAL streamed by `dr
//! wal stream`) the server does not wait; dr then waits for the stream's records. Either
//! way the commit needs the record of every segment from start to stop, and a timeout
//! leaves no manifest: exit 3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use dr_catalog::wal::{Lsn, SegmentName, SegmentSize};
use dr_catalog::{keys, BackupId, BackupKind, Manifest, ObjectRecord, ObjectRole, Physical};
use dr_config::TargetConfig;
use dr_pg::basebackup::{self, BackupLabel, ClusterIdentity, ManifestSummary, TarFindings};
use dr_pg::{ConnInfo, ServerVersion, Tool};
use dr_stream::Recipients;

mod stream;
mod wal;

pub use wal::{stop_segment, wait_for_wal, NOT_ARCHIVED_HINT};

use super::{cleanup, commit, Written};
use crate::lock::RunLock;
use crate::{human_bytes, Context, Error, Kind, Result, DR_VERSION};

/// Overrides `[targets.wal] archive_wait` in seconds (tests that need a short wait on a
/// target without `[targets.wal]`).
pub const ARCHIVE_WAIT_ENV: &str = "DR_ARCHIVE_WAIT_SECS";

/// How long a base backup of `target` waits for its WAL to be archived.
fn archive_wait(target: &TargetConfig) -> Duration {
    if let Some(secs) = std::env::var(ARCHIVE_WAIT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Duration::from_secs(secs);
    }
    let wait = target
        .wal
        .as_ref()
        .map_or(dr_config::DEFAULT_ARCHIVE_WAIT, |w| w.archive_wait);
    Duration::from_secs(wait.as_secs())
}

/// Logical operations (restore into a database, verify) refuse a physical backup: exit 2.
pub fn require_logical(m: &Manifest, what: &str) -> Result<()> {
    if m.kind == BackupKind::Physical {
        return Err(Error::config(format!(
            "backup {} of `{}` is a physical backup; {what} needs a logical one (`dr backup`)",
            m.id, m.target
        ))
        .with_hint(
            "a physical backup restores with `dr restore --at … --to-dir DIR` (not built yet); `dr list` shows each backup's kind",
        ));
    }
    Ok(())
}

/// The server as inspected before a base backup.
struct Cluster {
    conn: ConnInfo,
    version: ServerVersion,
    identity: ClusterIdentity,
    segment: SegmentSize,
    pg_basebackup: Tool,
    size: u64,
}

/// Connect, refuse what a base backup to stdout cannot hold (tablespaces) or dr does not do
/// yet (a standby), find pg_basebackup of the server's major.
async fn inspect(ctx: &Context, target: &TargetConfig) -> Result<Cluster> {
    let conn = ConnInfo::parse(&target.url)?;
    // Any database will do: a base backup copies them all.
    let client = conn.connect_cluster().await?;
    let version = ServerVersion::query(&client).await?;
    let identity = ClusterIdentity::query(&client).await?;
    if identity.in_recovery {
        return Err(Error::config(format!(
            "`{}` is a standby: physical backups of standbys are not supported yet; nothing was backed up",
            target.name
        ))
        .with_hint("point the target's url at the primary"));
    }
    let tablespaces = basebackup::extra_tablespaces(&client).await?;
    if !tablespaces.is_empty() {
        return Err(Error::config(format!(
            "the cluster of `{}` has tablespaces ({}): physical backups of clusters with tablespaces are not supported yet; nothing was backed up",
            target.name,
            tablespaces.join(", ")
        ))
        .with_hint("take logical backups of this target (`dr backup` without --physical)"));
    }
    let segment = SegmentSize::new(identity.segment_bytes)
        .map_err(|e| Error::new(Kind::Failed, format!("the server's wal_segment_size: {e}")))?;
    // Stream mode: the slot must hold the WAL from this backup's start until the stream
    // has it, whether or not the stream runs yet.
    if target
        .wal
        .as_ref()
        .is_some_and(|w| w.mode() == dr_config::WalMode::Stream)
    {
        let slot = dr_pg::replication::slot_name(&target.name);
        if dr_pg::replication::create_slot(&client, &slot).await? {
            tracing::warn!(
                "created replication slot {slot}: no `dr wal stream` has streamed `{}` yet; this backup commits only once the stream stores its WAL",
                target.name
            );
        }
    }
    let size = basebackup::cluster_size(&client).await.unwrap_or_else(|e| {
        tracing::warn!("cannot read the cluster's size ({e}); upload parts get the default size");
        0
    });
    drop(client);
    let bin_dir = target
        .pg_bin_dir
        .as_deref()
        .or(ctx.config.backup.pg_bin_dir.as_deref());
    let pg_basebackup = dr_pg::find_tool("pg_basebackup", version.major, bin_dir)?;
    Ok(Cluster {
        conn,
        version,
        identity,
        segment,
        pg_basebackup,
        size,
    })
}

/// One base backup of `target`, under its run lock (see [`super::run_physical`]).
pub(super) async fn run_locked(
    ctx: &Context,
    target: &TargetConfig,
    lock: &RunLock,
) -> Result<Manifest> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let recipients = Arc::new(ctx.recipients()?);
    let cluster = inspect(ctx, target).await?;
    // A base backup is only useful with WAL of the same cluster: another cluster's archive
    // is refused (exit 7) before anything is uploaded; a new one is recorded at the commit.
    let wal_cluster = crate::wal::identity::Cluster {
        system_identifier: cluster
            .identity
            .system_identifier
            .parse::<u64>()
            .map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!(
                        "the server's system identifier `{}`: {e}",
                        cluster.identity.system_identifier
                    ),
                )
            })?,
        major: cluster.version.major,
        segment_bytes: cluster.segment.bytes(),
    };
    if let Some(found) = crate::wal::identity::read(ctx, &target.name).await? {
        crate::wal::identity::check(&target.name, &wal_cluster, found)?;
    }
    let (started_at, id) = super::fresh_id::choose(ctx, &target.name, started_at).await?;
    // Parts of one size whatever the cluster's: a longer tar goes on in the next object.
    let plan = ctx
        .store
        .part_limits()
        .stream_plan(ctx.config.backup.part_size_mib);
    tracing::info!(
        target = %target.name, %id, server = %cluster.version.text,
        pg_basebackup = %cluster.pg_basebackup.version,
        cluster_size = %human_bytes(cluster.size), part_size = %human_bytes(plan.part_size),
        "physical backup started"
    );
    let mut written = Written { keys: Vec::new() };
    let manifest_key = keys::manifest(&target.name, &id);
    let objects =
        match write_objects(ctx, target, &cluster, &id, plan, &recipients, &mut written).await {
            Ok(v) => v,
            Err(e) => {
                cleanup(ctx.store.as_ref(), &manifest_key, &written).await;
                return Err(e);
            }
        };
    let (records, physical) = objects;
    let manifest = Manifest {
        format: Manifest::physical_format(&records),
        id,
        target: target.name.clone(),
        started_at,
        finished_at: Utc::now(),
        server_version: cluster.version.text.clone(),
        server_major: cluster.version.major,
        pg_dump_version: String::new(),
        dr_version: DR_VERSION.to_string(),
        // What the tar holds: the cluster as copied.
        database_bytes: records[0].raw_bytes,
        compression: "zstd".into(),
        encryption: "age".into(),
        recipients: recipients.to_strings(),
        objects: records,
        kind: BackupKind::Physical,
        physical: Some(physical),
    };
    if let Err(reason) = manifest.check() {
        cleanup(ctx.store.as_ref(), &manifest_key, &written).await;
        return Err(Error::new(
            Kind::Failed,
            format!("the manifest dr built is invalid: {reason}"),
        ));
    }
    if let Err(e) = crate::wal::identity::ensure(ctx, &target.name, &wal_cluster).await {
        cleanup(ctx.store.as_ref(), &manifest_key, &written).await;
        return Err(e);
    }
    commit(ctx, lock, &manifest, &mut written).await?;
    let p = manifest.physical.as_ref();
    tracing::info!(
        target = %target.name, id = %manifest.id,
        wal = %p.map(|p| format!("{}..{} timeline {}", p.start_lsn, p.stop_lsn, p.timeline)).unwrap_or_default(),
        stored = %human_bytes(manifest.stored_bytes()),
        raw = %human_bytes(manifest.raw_bytes()),
        seconds = crate::time::seconds(clock.elapsed()),
        "physical backup complete"
    );
    Ok(manifest)
}

/// The base tar and `backup_manifest`, stored, and the WAL range they need — waited for.
async fn write_objects(
    ctx: &Context,
    target: &TargetConfig,
    cluster: &Cluster,
    id: &BackupId,
    plan: dr_store::StreamPlan,
    recipients: &Arc<Recipients>,
    written: &mut Written,
) -> Result<(Vec<ObjectRecord>, Physical)> {
    let tar_key = keys::object(&target.name, id, keys::BASE_TAR);
    written.keys.push(tar_key.clone());
    let wait = archive_wait(target);
    let more_keys = std::sync::Mutex::default();
    let streamed = stream::stream_base(
        ctx,
        &cluster.pg_basebackup,
        &cluster.conn,
        &tar_key,
        id,
        plan,
        recipients,
        wait,
        &more_keys,
    )
    .await;
    // The base tar's later objects, for the cleanup of a run that fails from here on.
    written.keys.extend(
        more_keys
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let streamed = streamed?;
    let (tar, findings, stderr) = streamed;
    let range = read_range(&findings, &stderr, &cluster.identity.system_identifier)?;
    let pg_manifest = findings.backup_manifest.unwrap_or_default();
    let manifest_key = keys::object(&target.name, id, keys::BACKUP_MANIFEST);
    written.keys.push(manifest_key.clone());
    let manifest_rec = super::write::put_sealed(
        ctx.store.as_ref(),
        &manifest_key,
        &pg_manifest,
        recipients,
        ctx.config.backup.zstd_level,
        ObjectRole::BackupManifest,
    )
    .await?;
    let first = SegmentName::of(range.timeline, range.start, cluster.segment);
    let last = stop_segment(range.timeline, range.start, range.stop, cluster.segment);
    tracing::info!(
        start = %range.start, stop = %range.stop, timeline = range.timeline,
        first = %first, last = %last,
        "base backup streamed; waiting for its WAL in the repository"
    );
    wait_for_wal(
        ctx.store.as_ref(),
        &target.name,
        first,
        last,
        cluster.segment,
        wait,
        &ctx.cancel,
    )
    .await?;
    let physical = Physical {
        system_identifier: cluster.identity.system_identifier.clone(),
        timeline: range.timeline,
        start_lsn: range.start,
        stop_lsn: range.stop,
        start_segment: first.to_string(),
        stop_segment: last.to_string(),
        segment_bytes: cluster.segment.bytes(),
        checkpoint_lsn: range.checkpoint,
        pg_basebackup_version: cluster.pg_basebackup.version.clone(),
        backup_label: range.label,
    };
    Ok((vec![tar, manifest_rec], physical))
}

/// The WAL range of a finished base backup, from its `backup_manifest` (authoritative),
/// cross-checked with its `backup_label`, pg_basebackup's stderr and the server's identity.
struct Range {
    timeline: u32,
    start: Lsn,
    stop: Lsn,
    checkpoint: Lsn,
    label: String,
}

fn read_range(findings: &TarFindings, stderr: &[String], system_identifier: &str) -> Result<Range> {
    let bad = |what: String| {
        Error::new(
            Kind::Failed,
            format!("the base backup is not usable: {what}; nothing was committed"),
        )
        .with_hint(
            "run it again; if it repeats, run pg_basebackup by hand and report what it prints",
        )
    };
    if !findings.ended {
        return Err(bad("pg_basebackup's tar stream ended early".into()));
    }
    let (Some(label), Some(pg_manifest)) = (&findings.backup_label, &findings.backup_manifest)
    else {
        return Err(bad(
            "its tar holds no backup_label or no backup_manifest".into()
        ));
    };
    let label_text = String::from_utf8_lossy(label).into_owned();
    let label = BackupLabel::parse(&label_text).map_err(|e| bad(e.to_string()))?;
    let summary = ManifestSummary::parse(pg_manifest).map_err(|e| bad(e.to_string()))?;
    let lsn = |s: &str| s.parse::<Lsn>().map_err(|e| bad(e.to_string()));
    let [range] = summary.wal_ranges.as_slice() else {
        return Err(bad(format!(
            "its WAL spans {} timelines (a standby that was promoted meanwhile)",
            summary.wal_ranges.len()
        )));
    };
    let (start, stop) = (lsn(&range.start_lsn)?, lsn(&range.end_lsn)?);
    if lsn(&label.start_lsn)? != start || label.timeline != range.timeline {
        return Err(bad(format!(
            "backup_label starts at {} on timeline {}, backup_manifest at {start} on timeline {}",
            label.start_lsn, label.timeline, range.timeline
        )));
    }
    let facts = basebackup::read_stderr(stderr.iter().map(String::as_str));
    if let Some((s, tli)) = &facts.start {
        if lsn(s)? != start || *tli != range.timeline {
            return Err(bad(format!("pg_basebackup said it started at {s} on timeline {tli}, its backup_manifest {start}")));
        }
    }
    if let Some(e) = &facts.end {
        if lsn(e)? != stop {
            return Err(bad(format!(
                "pg_basebackup said it stopped at {e}, its backup_manifest {stop}"
            )));
        }
    }
    if let Some(sysid) = summary.system_identifier {
        if sysid.to_string() != system_identifier {
            return Err(bad(format!(
                "its backup_manifest is of system {sysid}, the server said {}",
                system_identifier
            )));
        }
    }
    if facts.archiving_not_enabled {
        tracing::info!("the server does not archive WAL (archive_mode off): its WAL must come from `dr wal stream`");
    }
    Ok(Range {
        timeline: range.timeline,
        start,
        stop,
        checkpoint: lsn(&label.checkpoint_lsn)?,
        label: label_text,
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000080\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
        START TIME: 2026-12-04 02:11:37 UTC\nLABEL: dr 20261204T021137Z\nSTART TIMELINE: 1\n";
    const SYSID: &str = "7715265767638906800";

    fn pg_manifest(start: &str, ranges: &str) -> Vec<u8> {
        format!(
            r#"{{ "PostgreSQL-Backup-Manifest-Version": 2, "System-Identifier": {SYSID}, "Files": [],
            "WAL-Ranges": [ {{ "Timeline": 1, "Start-LSN": "{start}", "End-LSN": "0/2000120" }}{ranges} ] }}"#
        )
        .into_bytes()
    }

    fn findings(label: &str, manifest: Vec<u8>) -> TarFindings {
        TarFindings {
            backup_label: Some(label.as_bytes().to_vec()),
            backup_manifest: Some(manifest),
            members: 3,
            ended: true,
        }
    }

    fn refused(f: &TarFindings, stderr: &[String], sysid: &str) -> String {
        match read_range(f, stderr, sysid) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_wal_range_comes_from_backup_manifest_checked_against_the_rest() {
        let good = findings(LABEL, pg_manifest("0/2000028", ""));
        let r = read_range(&good, &[], SYSID).expect("range");
        assert_eq!(
            (r.start.to_string(), r.stop.to_string()),
            ("0/2000028".into(), "0/2000120".into())
        );
        assert_eq!(
            (r.timeline, r.checkpoint.to_string()),
            (1, "0/2000080".into())
        );
        // Each disagreement fails the backup rather than committing a wrong range.
        let e = refused(&findings(LABEL, pg_manifest("0/3000028", "")), &[], SYSID);
        assert!(e.contains("backup_label starts at 0/2000028"), "{e}");
        let two = r#", { "Timeline": 2, "Start-LSN": "0/2000120", "End-LSN": "0/2000200" }"#;
        let e = refused(&findings(LABEL, pg_manifest("0/2000028", two)), &[], SYSID);
        assert!(e.contains("2 timelines"), "{e}");
        let e = refused(&good, &[], "1234");
        assert!(e.contains("system 7715265767638906800"), "{e}");
        let said = vec!["pg_basebackup: write-ahead log end point: 0/2000200".to_string()];
        let e = refused(&good, &said, SYSID);
        assert!(e.contains("stopped at 0/2000200"), "{e}");
        let mut cut = good.clone();
        cut.ended = false;
        assert!(refused(&cut, &[], SYSID).contains("ended early"));
        let mut no_manifest = good;
        no_manifest.backup_manifest = None;
        assert!(refused(&no_manifest, &[], SYSID).contains("no backup_manifest"));
    }

    #[test]
    fn logical_operations_refuse_a_physical_backup() {
        let mut m = crate::testing::entry("app", "20261204T021137Z").manifest;
        assert!(require_logical(&m, "a restore into a database").is_ok());
        m.kind = BackupKind::Physical;
        let e = require_logical(&m, "a restore into a database").expect_err("physical");
        assert_eq!(e.kind, Kind::Config);
        assert!(
            e.hint.as_deref().is_some_and(|h| h.contains("--to-dir")),
            "{e}"
        );
    }
}
