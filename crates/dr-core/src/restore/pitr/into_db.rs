//! `dr restore --at TIME|LSN|latest --to URL [--table S.T] [--schema S]` for a target with
//! WAL: any second of the window into any database.
//!
//! Order of work, each step a gate for the next:
//! 1. the plan (base backup, timeline, every WAL segment — a point outside the window fails
//!    here, saying the window);
//! 2. the destination inspected (unreachable: nothing is created anywhere; a non-empty
//!    database refused without `--clean`/`--force`; an older server refused);
//! 3. the plan shown (`--dry-run` stops here: the sandbox's disk and where), the operator asked;
//! 4. the `sandbox`: the base backup unpacked under the temp dir, recovered to the point,
//!    promoted, running on a private socket;
//! 5. the database streamed from the sandbox into the destination (`restore::live`: the
//!    section streams, `--jobs`, selection, foreign keys, counts of a stored backup's restore);
//! 6. the sandbox stopped and removed — also after a failure or a signal.
//!
//! A target without WAL (or without a base backup yet) is not this: `--at` picks the newest
//! logical backup before the time, as before ([`run`] returns `None`).

use std::collections::BTreeMap;
use std::time::Instant;

use dr_catalog::wal::plan::Target;
use dr_catalog::{BackupKind, ObjectRole};
use dr_pg::ConnInfo;

use super::sandbox::{Recipe, Sandbox};
use super::{plan_with, summarize, Planned};
use crate::restore::layout::Origin;
use crate::restore::live::{self, Live};
use crate::restore::plan::{check_clean, destination_state, selection, Plan, RecoveryPlan};
use crate::restore::target::{inspect_target, TargetState};
use crate::restore::{jobs_of, temp_dir_of, Confirm, RestoreOptions, RestoreReport};
use crate::{repo, Context, Error, Result};

/// The point, beyond what a restore into a database asks for.
#[derive(Debug, Clone)]
pub struct AtOptions {
    pub at: Target,
    /// `--timeline`: recover onto this timeline instead of the one the plan picks.
    pub timeline: Option<u32>,
    /// How the sandbox's server runs `dr wal fetch`: this binary, `--config`, `--env-file`.
    pub fetch_argv: Vec<String>,
}

/// WAL the sandbox keeps at most while it replays: recovery removes each segment once
/// replayed, so what is on disk at once is the prefetched segments and the server's own WAL
/// up to `max_wal_size` (1 GB by default) — not the whole range.
const WAL_HEADROOM: u64 = 1 << 30;

/// The disk a sandbox needs: the base backup's raw size, and the WAL it replays (segments ×
/// segment size) up to [`WAL_HEADROOM`].
pub(crate) fn sandbox_bytes(base_raw: u64, segments: usize, segment_bytes: u64) -> u64 {
    let wal = (segments as u64).saturating_mul(segment_bytes);
    base_raw.saturating_add(wal.min(WAL_HEADROOM))
}

/// Restore `opts.target` as of `at.at` into `opts.to`; `None` when the target has no WAL
/// archive or no base backup (then `--at` picks a logical backup, said on stderr).
pub async fn run(
    ctx: &Context,
    opts: &RestoreOptions,
    at: &AtOptions,
    confirm: Confirm<'_>,
) -> Result<Option<RestoreReport>> {
    let started = Instant::now();
    let Some(target) = target_with_wal(ctx, opts.target.as_deref()) else {
        return Ok(None);
    };
    let entries = repo::list(ctx.store.as_ref(), Some(&target), &ctx.signing).await?;
    if !entries
        .iter()
        .any(|e| e.manifest.kind == BackupKind::Physical && e.trust.is_trusted())
    {
        tracing::warn!(
            "target `{target}` archives WAL but the repository holds no base backup of it yet (`dr backup --physical --target {target}`): --at picks the newest logical backup before the time"
        );
        return Ok(None);
    }
    refuse_unsupported(opts)?;
    let planned = plan_with(ctx, target, entries, at.at, at.timeline).await?;
    let (database, users) = source_database(ctx, &planned.target)?;
    let Some(to) = opts.to.as_deref() else {
        return Err(Error::config("--at with a target's WAL restores into a database: give --to URL (or --to-dir DIR for a data directory)"));
    };
    let destination = inspect_target(ConnInfo::parse(to)?).await?;
    destination.check_accepts(planned.manifest.server_major, opts)?;
    let jobs = jobs_of(opts)?;
    let temp_dir = temp_dir_of(ctx, opts);
    let plan = plan_of(&planned, &database, &destination, opts, jobs, &temp_dir);
    let seconds = BTreeMap::new();
    if opts.dry_run {
        return Ok(Some(RestoreReport::not_restored(plan, seconds)));
    }
    if let Some(ask) = confirm {
        ask(&plan)?;
    }
    restore(
        ctx,
        &planned,
        &database,
        &users,
        &destination,
        opts,
        at,
        plan,
        started,
    )
    .await
    .map(Some)
}

/// The sandbox made, the database streamed from it, the sandbox removed (whatever happened).
#[allow(clippy::too_many_arguments)]
async fn restore(
    ctx: &Context,
    planned: &Planned,
    database: &str,
    users: &[String],
    destination: &TargetState,
    opts: &RestoreOptions,
    at: &AtOptions,
    plan: Plan,
    started: Instant,
) -> Result<RestoreReport> {
    let identities = ctx.identities()?;
    let temp_dir = temp_dir_of(ctx, opts);
    let bytes_needed = plan.recovery.as_ref().map_or(0, |r| r.sandbox_bytes_needed);
    let major = planned.manifest.server_major;
    let bin_dir = crate::restore::target_pg_bin_dir(&ctx.config, &planned.target).or(ctx
        .config
        .backup
        .pg_bin_dir
        .as_deref());
    let pg_dump = dr_pg::find_tool("pg_dump", major, bin_dir)?;
    let pg_dumpall = dr_pg::find_tool("pg_dumpall", pg_dump.major, bin_dir)?;
    let recipe = Recipe {
        planned,
        temp_dir: &temp_dir,
        fetch_argv: &at.fetch_argv,
        database,
        users,
        bytes_needed,
        exclusive: false,
    };
    let clock = Instant::now();
    let sandbox = Sandbox::recover(ctx, &recipe).await?;
    let mut seconds = BTreeMap::new();
    seconds.insert("recover".into(), clock.elapsed().as_secs_f64());
    let origin = origin(planned, pg_dump.major);
    let reached = sandbox.reached.clone();
    let source = sandbox.conn().clone();
    // The sandbox is removed as soon as the restore no longer needs it (its streams done and
    // counted: the target's post-data and counts go on meanwhile), or once the restore ends.
    let (free, freed) = tokio::sync::oneshot::channel();
    let removal = async move {
        let _ = freed.await;
        sandbox.remove().await;
    };
    let live = Live {
        ctx,
        source: &source,
        pg_dump: &pg_dump,
        pg_dumpall: &pg_dumpall,
        origin: &origin,
        identities: &identities,
        target: destination,
        opts,
        jobs: plan.jobs,
        temp_dir: &temp_dir,
        free: std::sync::Mutex::new(Some(free)),
    };
    let restoring = async {
        let r = live::restore(&live, plan, seconds, started).await;
        // Told or not, the sandbox goes now.
        drop(live.free.lock().map(|mut f| f.take()));
        r
    };
    let (restored, ()) = tokio::join!(restoring, removal);
    let mut report = restored?;
    report.recovered = Some(reached);
    Ok(report)
}

/// What is restored (dumped by a pg_dump of `dump_major`), for messages and the command
/// that restores it again.
fn origin(planned: &Planned, dump_major: u32) -> Origin {
    let (point, again) = point_and_again(planned.chosen.target);
    Origin {
        what: format!("`{}` as of {point}", planned.target),
        target: planned.target.clone(),
        archive_major: dump_major,
        again: format!("{again} --target {}", planned.target),
        backup_id: None,
    }
}

/// The point for messages, and the `--at` that names it again (to the microsecond).
fn point_and_again(target: Target) -> (String, String) {
    match target {
        Target::Time(t) => {
            let t = crate::time::format(t);
            (t.clone(), format!("--at '{t}'"))
        }
        Target::Lsn(l) => (format!("LSN {l}"), format!("--at {l}")),
        Target::Latest => ("the end of its WAL".into(), "--at latest".into()),
    }
}

/// Whether `--at` into a database may recover in a sandbox: the target named (or the only
/// one configured) has `[targets.wal]` (reads only the config; [`run`] then looks for a
/// base backup).
pub fn recovers_with_wal(ctx: &Context, target: Option<&str>) -> bool {
    target_with_wal(ctx, target).is_some()
}

/// The target named (or the only one configured), when it has `[targets.wal]`.
fn target_with_wal(ctx: &Context, flag: Option<&str>) -> Option<String> {
    let targets = &ctx.config.targets;
    let target = match flag {
        Some(name) => targets.iter().find(|t| t.name == name)?,
        None => match targets.as_slice() {
            [only] => only,
            _ => return None,
        },
    };
    target.wal.as_ref().map(|_| target.name.clone())
}

/// What a point-in-time restore into a database cannot do (yet), refused before anything.
fn refuse_unsupported(opts: &RestoreOptions) -> Result<()> {
    if opts.to_file.is_some() || opts.globals_to_file.is_some() {
        return Err(Error::config(
            "--to-file and --globals-to-file write a stored backup's archive; a point in time is recovered, not stored: nothing was done",
        )
        .with_hint("restore the point into a database (`--to URL`), then pg_dump it; or pick a logical backup by its id"));
    }
    check_clean(opts)?;
    selection(opts)?;
    Ok(())
}

/// The database the target backs up, and the roles to connect to it as in the sandbox: the
/// target's user first, then `postgres` (the sandbox trusts its private socket).
pub(crate) fn source_database(ctx: &Context, target: &str) -> Result<(String, Vec<String>)> {
    let config = ctx
        .config
        .targets
        .iter()
        .find(|t| t.name == target)
        .ok_or_else(|| Error::config(format!("target `{target}` is not configured")))?;
    if config.is_server() {
        return Err(Error::config(format!(
            "target `{target}` is every database of a server: name the database to restore"
        ))
        .with_hint(format!("pass --target {target}.DATABASE")));
    }
    let conn = ConnInfo::parse(&config.url)?;
    let mut users = vec![conn.user().to_string()];
    if conn.user() != "postgres" {
        users.push("postgres".into());
    }
    Ok((conn.dbname().to_string(), users))
}

/// The plan shown before anything happens (and by `--dry-run`).
fn plan_of(
    planned: &Planned,
    database: &str,
    destination: &TargetState,
    opts: &RestoreOptions,
    jobs: u32,
    temp_dir: &std::path::Path,
) -> Plan {
    let m = &planned.manifest;
    let chosen = &planned.chosen;
    let base_raw = m.object(ObjectRole::BaseTar).map_or(0, |o| o.raw_bytes);
    let needed = sandbox_bytes(base_raw, chosen.segments.len(), planned.segment_bytes);
    // The restore from the sandbox is a logical restore: the newest one `dr verify` measured,
    // scaled to the newest logical backup's size (the database's size near enough).
    let measured = crate::rto::newest(&planned.entries, &planned.target);
    let drilled = crate::rto::newest_drill(&planned.entries, &planned.target);
    let logical_bytes = planned
        .entries
        .iter()
        .find(|e| e.manifest.kind == BackupKind::Logical)
        .map_or(0, |e| e.manifest.archive_raw_bytes());
    Plan {
        backup_id: m.id.to_string(),
        target: planned.target.clone(),
        backup_started_at: m.started_at.to_rfc3339(),
        stored_bytes: m.stored_bytes() + chosen.bytes,
        archive_bytes: base_raw,
        data_streams: None,
        // The base backup is checked as it is unpacked and every WAL segment as it is fetched,
        // all before the destination is touched.
        check_first: true,
        server_version: m.server_version.clone(),
        destination: destination.conn.to_string(),
        destination_state: destination_state(Some(destination), opts),
        changes_existing: destination.exists || opts.with_globals,
        tables: 0,
        rows: 0,
        jobs,
        temp_dir: temp_dir.display().to_string(),
        temp_bytes_needed: needed,
        selection: crate::restore::layout::described_selection(opts),
        estimated_restore: measured.map(|x| crate::rto::estimate(&x, logical_bytes)),
        powerful_roles: Vec::new(),
        recovery: Some(RecoveryPlan {
            pitr: summarize(&planned.target, chosen, m, temp_dir),
            sandbox_bytes_needed: needed,
            database: database.to_string(),
            estimated_recovery_seconds: drilled.as_ref().map(|d| {
                crate::rto::estimate_recovery(
                    d,
                    base_raw,
                    (chosen.segments.len() as u64).saturating_mul(planned.segment_bytes),
                )
            }),
            measured_by: drilled,
        }),
        at_gap: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_needs_the_base_and_the_wal_it_holds_at_once() {
        const MIB: u64 = 1 << 20;
        // A short range: all of it.
        assert_eq!(sandbox_bytes(500 * MIB, 3, 16 * MIB), 548 * MIB);
        // A long one: the base and the headroom, not every segment of the window.
        assert_eq!(
            sandbox_bytes(500 * MIB, 10_000, 16 * MIB),
            500 * MIB + WAL_HEADROOM
        );
        assert_eq!(sandbox_bytes(0, 0, 16 * MIB), 0);
    }

    #[test]
    fn a_restore_of_a_point_names_it_for_the_retry() {
        let at: chrono::DateTime<chrono::Utc> = "2026-12-03T14:05:32.25Z".parse().expect("time");
        let (point, again) = point_and_again(Target::Time(at));
        assert_eq!(point, "2026-12-03T14:05:32.250Z");
        assert_eq!(again, "--at '2026-12-03T14:05:32.250Z'");
        let lsn = "0/3000028".parse().expect("lsn");
        assert_eq!(point_and_again(Target::Lsn(lsn)).1, "--at 0/3000028");
        assert_eq!(point_and_again(Target::Latest).1, "--at latest");
    }
}
