//! Loading into the target: the pg_restore child under a session name of its own, its lock
//! waits watched, and the restored row counts compared with the backup's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use dr_catalog::{BackupDetails, Manifest};
use dr_pg::{ChildProcess, ConnInfo};

use super::globals::apply_globals;
use super::layout::Origin;
use super::plan::{selected_counts, selection};
use super::target::TargetState;
use super::RestoreOptions;
use crate::{Context, Error, Kind, Result};

/// pg_restore's errors, each table's (expected, actual) rows, the count mismatches, and the
/// foreign keys a selective restore left out.
pub(super) struct Outcome {
    pub errors: Vec<String>,
    pub tables: BTreeMap<String, (i64, i64)>,
    pub mismatches: Vec<String>,
    pub skipped_foreign_keys: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn restore_into(
    ctx: &Context,
    m: &Manifest,
    details: &BackupDetails,
    target: &TargetState,
    archive: &Path,
    globals: Option<&[u8]>,
    jobs: u32,
    opts: &RestoreOptions,
    created: &mut bool,
) -> Result<Outcome> {
    let conn = &target.conn;
    let pg_restore = find_pg_restore(ctx, &Origin::backup(m), target)?;
    let mut errors = Vec::new();
    if let Some(sql) = globals {
        errors.extend(apply_globals(conn, sql, opts, &format!("backup {}", m.id)).await?);
    }
    if !target.exists {
        create_database(conn).await?;
        *created = true;
    }
    // The children's sessions get a name of their own: to watch their lock waits, and to end
    // them if the restore is stopped.
    let session_name = restore_session_name();
    let child_conn = conn.with_application_name(&session_name);
    let lock_wait = ctx.config.restore.lock_wait_timeout_secs;
    let mut args = vec![
        "--no-password".to_string(),
        format!("--dbname={}", conn.dbname_arg()),
        format!("--jobs={jobs}"),
        "--verbose".to_string(),
    ];
    if opts.clean {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    if opts.no_owner {
        args.push("--no-owner".into());
        args.push("--no-acl".into());
    }
    let _list_file;
    let mut skipped_foreign_keys = Vec::new();
    if !opts.tables.is_empty() || !opts.schemas.is_empty() {
        let selected = selective_list(&pg_restore.path, archive, opts).await?;
        for fk in &selected.skipped_foreign_keys {
            tracing::warn!("foreign key {fk} skipped: the table it references is not restored");
        }
        skipped_foreign_keys = selected.skipped_foreign_keys;
        let list = selected.list;
        let mut f = tempfile::NamedTempFile::new()
            .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
        f.write_all(list.as_bytes())
            .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
        args.push(format!("--use-list={}", f.path().display()));
        _list_file = f;
    }
    args.push(archive.display().to_string());
    tracing::info!(jobs, "pg_restore started");
    let child = ChildProcess::spawn(
        &pg_restore.path,
        &args,
        Some(&child_conn),
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    )?;
    let spinner = crate::progress::spinner(ctx.progress, "restoring");
    let mut watcher = tokio::spawn(watch_lock_waits(
        conn.clone(),
        session_name.clone(),
        (lock_wait > 0).then(|| Duration::from_secs(lock_wait)),
    ));
    let mut gave_up: Option<String> = None;
    let stop = async {
        tokio::select! {
            () = ctx.cancel.cancelled() => {}
            r = &mut watcher => gave_up = r.ok(),
        }
    };
    let waited = child.wait_or_stop(stop).await;
    watcher.abort();
    spinner.finish_and_clear();
    let Some(finished) = waited else {
        // pg_restore and its workers are gone; their sessions must be too before we report.
        match dr_pg::end_sessions(conn, &session_name, Duration::from_secs(10)).await {
            Ok(0) => {}
            Ok(n) => tracing::error!(
                "{n} session(s) of the stopped restore are still on the server (application_name `{session_name}`)"
            ),
            Err(e) => tracing::error!("could not end the stopped restore's sessions: {e}"),
        }
        if let Some(why) = gave_up {
            return Err(Error::new(
                Kind::Failed,
                format!("the restore into {conn} was stopped: {why}"),
            )
            .with_hint("the database is partially restored; stop the application's connections to the target (or restore into a new database name), then restore again with --clean"));
        }
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "the restore into {conn} was interrupted by a signal; pg_restore and its workers were stopped"
            ),
        )
        .with_hint("the database is partially restored: restore again with --clean (or drop it and restore into a new name)"));
    };
    match finished {
        Ok(f) => errors.extend(f.errors),
        Err(dr_pg::PgError::Failed(pf)) => errors.extend(error_lines(&pf)),
        Err(e) => return Err(e.into()),
    }
    let (tables, mismatches) =
        count_and_compare(ctx, conn, &session_name, details, opts, jobs).await?;
    Ok(Outcome {
        errors,
        tables,
        mismatches,
        skipped_foreign_keys,
    })
}

/// The `pg_bin_dir` of the configured target whose backups are named `name` (for a
/// `databases = "all"` target, `SERVER.DATABASE`): where its tools are, as for its backups.
pub(crate) fn target_pg_bin_dir<'a>(
    config: &'a dr_config::Config,
    name: &str,
) -> Option<&'a std::path::Path> {
    let server = dr_catalog::members::server_of(name);
    config
        .targets
        .iter()
        .find(|t| t.name == name || (t.is_server() && Some(t.name.as_str()) == server))
        .and_then(|t| t.pg_bin_dir.as_deref())
}

/// pg_restore must read the archive (>= the dumping major) and speak to the target. Looks in
/// the backup's target's `pg_bin_dir`, else `backup.pg_bin_dir`, then the usual places.
/// Prefer the target's major; any pg_restore at least as new as the archive's pg_dump works.
/// The archive's format is the dumping pg_dump's (which may be newer than its server).
pub(super) fn find_pg_restore(
    ctx: &Context,
    origin: &Origin,
    target: &TargetState,
) -> Result<dr_pg::Tool> {
    let bin_dir =
        target_pg_bin_dir(&ctx.config, &origin.target).or(ctx.config.backup.pg_bin_dir.as_deref());
    let archive_major = origin.archive_major;
    match dr_pg::find_tool("pg_restore", target.major.max(archive_major), bin_dir) {
        Ok(t) => Ok(t),
        Err(_) => Ok(dr_pg::find_tool("pg_restore", archive_major, bin_dir)?),
    }
}

/// `create database` for the restore (from template0: the archive brings everything).
pub(super) async fn create_database(conn: &ConnInfo) -> Result<()> {
    let admin = conn.connect_admin().await?;
    dr_pg::target::create_database(&admin, conn.dbname()).await?;
    tracing::info!("created database {}", conn.dbname());
    Ok(())
}

/// The error lines of a pg_restore that exited non-zero; its status and whole stderr when
/// it printed none.
pub(super) fn error_lines(pf: &dr_pg::ProcessFailure) -> Vec<String> {
    let lines: Vec<String> = pf
        .stderr
        .lines()
        .filter(|l| l.contains("error:") || l.contains("ERROR") || l.contains("FATAL"))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        std::iter::once(format!("{} ({})", pf.command, pf.status))
            .chain(pf.stderr.lines().map(str::to_string))
            .collect()
    } else {
        lines
    }
}

/// Count the restored tables and compare with what the backup recorded for the selection.
/// The counting sessions are named `session_name`: a count waiting for the application's
/// lock is reported every [`LOCK_REPORT_EVERY`] and given up on at the limit.
pub(super) async fn count_and_compare(
    ctx: &Context,
    conn: &ConnInfo,
    session_name: &str,
    details: &BackupDetails,
    opts: &RestoreOptions,
    jobs: u32,
) -> Result<(BTreeMap<String, (i64, i64)>, Vec<String>)> {
    let (expected, _) = selected_counts(details, opts);
    let counting = conn.with_application_name(session_name);
    let lock_wait = ctx.config.restore.lock_wait_timeout_secs;
    let watcher = watch_lock_waits(
        conn.clone(),
        session_name.to_string(),
        (lock_wait > 0).then(|| Duration::from_secs(lock_wait)),
    );
    let counted = tokio::select! {
        r = dr_pg::count_tables_parallel(&counting, usize::try_from(jobs).unwrap_or(2)) => r?,
        why = watcher => {
            let _ = dr_pg::end_sessions(conn, session_name, Duration::from_secs(10)).await;
            return Err(Error::new(
                Kind::Failed,
                format!("counting the restored rows in {conn} was stopped: {why}"),
            )
            .with_hint("the data is restored but not checked: stop the application's connections to the target, then compare the counts (`dr show` lists the backup's)"));
        }
    };
    let actual: BTreeMap<String, i64> = counted
        .into_iter()
        .map(|t| (format!("{}.{}", t.schema, t.name), t.rows))
        .collect();
    Ok(compare_counts(&expected, &actual))
}

/// Each expected table's (expected, actual) rows, and a line for every table whose count
/// differs or that is missing.
fn compare_counts(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
) -> (BTreeMap<String, (i64, i64)>, Vec<String>) {
    let mut tables = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (name, exp) in expected {
        match actual.get(name) {
            Some(a) => {
                tables.insert(name.clone(), (*exp, *a));
                if a != exp {
                    mismatches.push(format!(
                        "table {name}: backup recorded {exp} rows, restored {a}"
                    ));
                }
            }
            None => mismatches.push(format!(
                "table {name}: missing after restore (backup recorded {exp} rows)"
            )),
        }
    }
    (tables, mismatches)
}

/// A `pg_restore -L` list for the selection: the archive's whole pre-data section, the data
/// of the selected tables and their indexes, constraints and triggers — the archive's
/// `--list` and schema script, filtered by [`dr_pg::select_entries`].
async fn selective_list(
    pg_restore: &Path,
    archive: &Path,
    opts: &RestoreOptions,
) -> Result<dr_pg::Selected> {
    let run = |args: Vec<String>| pg_restore_output(pg_restore, args);
    let list = run(vec!["--list".into(), archive.display().to_string()]).await?;
    let script = run(vec![
        "--schema-only".into(),
        "--file=-".into(),
        archive.display().to_string(),
    ])
    .await?;
    let out = dr_pg::select_entries(&list, &script, &selection(opts)?);
    if out.list.is_empty() {
        return Err(super::select::nothing_matches(opts));
    }
    Ok(out)
}

/// What `pg_restore ARGS` prints on stdout (a list, a script), the tool's failure otherwise.
pub(super) async fn pg_restore_output(pg_restore: &Path, args: Vec<String>) -> Result<String> {
    let mut child = ChildProcess::spawn(
        pg_restore,
        &args,
        None,
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    )?;
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout() {
        use tokio::io::AsyncReadExt;
        stdout
            .read_to_end(&mut out)
            .await
            .map_err(|e| Error::new(Kind::Failed, format!("reading pg_restore's output: {e}")))?;
    }
    child.wait().await.map_err(|e| {
        Error::from(e).context("listing the archive's contents for the selective restore")
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A name no other session on the server has: `dr-restore-PID-N`.
pub(super) fn restore_session_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "dr-restore-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, AtomicOrdering::Relaxed)
    )
}

/// How often a restore that waits for a lock says so.
const LOCK_REPORT_EVERY: Duration = Duration::from_secs(10);

/// While pg_restore runs: every [`LOCK_REPORT_EVERY`], log each of its sessions that waits
/// for a lock, and who holds it — a restore blocked by the app's open transaction must not
/// look like a slow one. Returns (ending the restore) once a statement has waited `limit`:
/// the archive's preamble sets `lock_timeout = 0`, so a server setting cannot do this, and
/// cancelling statement after statement would only make every next one wait as long.
pub(super) async fn watch_lock_waits(
    conn: ConnInfo,
    session_name: String,
    limit: Option<Duration>,
) -> String {
    let mut client = None;
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if client.is_none() {
            client = conn.connect().await.ok();
        }
        let Some(c) = &client else { continue };
        let waits = match dr_pg::lock_waits(c, &session_name).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("cannot look for lock waits: {e}");
                client = None;
                continue;
            }
        };
        if let Some(limit) = limit {
            if let Some(w) = waits
                .iter()
                .find(|w| u64::try_from(w.waiting_secs).unwrap_or(0) >= limit.as_secs())
            {
                return format!(
                    "gave up waiting for a lock after {} s (restore.lock_wait_timeout_secs): {w}",
                    limit.as_secs()
                );
            }
        }
        if last_report.elapsed() >= LOCK_REPORT_EVERY {
            last_report = Instant::now();
            for w in waits.iter().filter(|w| w.waiting_secs >= 5) {
                match limit {
                    Some(l) => tracing::warn!(
                        "restore waiting for a lock: {w}; dr gives up once a statement has waited {} s (restore.lock_wait_timeout_secs)",
                        l.as_secs()
                    ),
                    None => tracing::warn!(
                        "restore waiting for a lock: {w}; dr waits without a limit (restore.lock_wait_timeout_secs = 0)"
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_differing_and_missing_tables() {
        let expected: BTreeMap<String, i64> = [
            ("public.a".to_string(), 3),
            ("public.b".to_string(), 5),
            ("public.c".to_string(), 0),
        ]
        .into();
        let actual: BTreeMap<String, i64> = [
            ("public.a".to_string(), 3),
            ("public.b".to_string(), 4),
            ("public.x".to_string(), 9),
        ]
        .into();
        let (tables, mismatches) = compare_counts(&expected, &actual);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables["public.b"], (5, 4));
        assert_eq!(
            mismatches,
            vec![
                "table public.b: backup recorded 5 rows, restored 4",
                "table public.c: missing after restore (backup recorded 0 rows)",
            ]
        );
    }
}
