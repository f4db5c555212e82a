//! `dr restore`: fetch, check, decrypt — and only then touch the target.
//!
//! Order of work, each step a gate for the next:
//! 1. pick the backup (id, `latest`, `--at`); decrypt its details (proves the identity fits);
//! 2. inspect the target: server major, does the database exist, does it hold user objects —
//!    refuse a non-empty target unless `--clean`/`--force`;
//! 3. check temp space; download, verify SHA-256, decrypt and decompress into a local archive
//!    (pg_restore -j needs a seekable file);
//! 4. create the database if missing, create missing roles (`--with-globals`), `pg_restore -j`;
//! 5. compare restored row counts with the backup's; any pg_restore error is a failure.
//!
//! One file per step: `plan` (what will happen, which tables are selected), `target`
//! (inspecting the destination), `fetch` (details, globals and the archive from the store),
//! `globals` (creating the roles the target lacks), `load` (pg_restore, selective lists, the
//! count comparison); `single` fetches a single archive (format 1) and restores it. A backup in sections (format 2) streams through `sections`, with
//! `select` (its selective lists), `clean` (what `--clean` drops first), `stop` (every stream
//! stopped at the first failure), `leave` (what a stopped restore leaves behind) and
//! `to_file` (`--to-file DIR`). The PostgreSQL text formats (the `pg_restore --list` table of contents,
//! the globals script) are parsed in `dr_pg`.

mod clean;
mod fetch;
mod globals;
mod layout;
mod leave;
mod live;
mod load;
pub mod pitr;
mod plan;
mod rows;
mod sections;
mod select;
mod single;
mod step;
mod stop;
mod target;
mod to_file;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use dr_catalog::{BackupDetails, Layout, Manifest};
use dr_pg::ConnInfo;
use dr_stream::Identities;
use serde::Serialize;

use crate::repo::{self, Selector};
use crate::{Context, Error, Kind, Result};

pub(crate) use fetch::private_file;
pub use fetch::{fetch_archive, fetch_details};
pub use globals::apply_globals;
pub use plan::Plan;

use fetch::fetch_globals;
pub(crate) use load::target_pg_bin_dir;
use plan::check_selection;
use target::inspect_target;

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub selector: Option<Selector>,
    pub target: Option<String>,
    pub to: Option<String>,
    pub to_file: Option<PathBuf>,
    pub globals_to_file: Option<PathBuf>,
    pub jobs: Option<u32>,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub clean: bool,
    pub force: bool,
    pub with_globals: bool,
    /// Roles `--with-globals` may create with powers (SUPERUSER, REPLICATION, BYPASSRLS, a
    /// password, membership in such a role): each by name (`--allow-role`).
    pub allow_roles: Vec<String>,
    /// Any role with powers may be created: a throwaway sandbox (verify), never the CLI.
    pub allow_any_role: bool,
    pub no_owner: bool,
    pub dry_run: bool,
    pub temp_dir: Option<PathBuf>,
    /// Download and check every object before touching the target (format 2). `None`: on
    /// when the target database exists, off when dr creates it (a failure drops it).
    pub check_first: Option<bool>,
    /// Restore an unsigned backup (made before signing existed); see [`crate::trust`].
    pub trust_unsigned: bool,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub plan: Plan,
    pub restored: bool,
    /// table → (expected, actual)
    pub tables: BTreeMap<String, (i64, i64)>,
    pub mismatches: Vec<String>,
    pub errors: Vec<String>,
    /// Foreign keys a selective restore left out because the table they reference was not
    /// restored: "constraint (on schema.table, to schema.referenced)".
    pub skipped_foreign_keys: Vec<String>,
    pub seconds: BTreeMap<String, f64>,
    /// `--at` of a target with WAL: where recovery in the sandbox stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<pitr::Reached>,
}

impl RestoreReport {
    /// A run that stopped before the target: a dry run, or `--to-file` alone.
    fn not_restored(plan: Plan, seconds: BTreeMap<String, f64>) -> RestoreReport {
        RestoreReport {
            plan,
            restored: false,
            tables: BTreeMap::new(),
            mismatches: Vec::new(),
            errors: Vec::new(),
            skipped_foreign_keys: Vec::new(),
            seconds,
            recovered: None,
        }
    }
}

/// Ask the operator before anything is changed: `Err` (a refusal, or the answer no) stops
/// the restore with nothing changed. `None`: the operator said yes already (`--yes`).
pub type Confirm<'a> = Option<&'a (dyn Fn(&Plan) -> Result<()> + Sync)>;

/// Restore as the operator asked: pick the backup (`opts.selector`, `opts.target`), decrypt
/// its details, then restore into `opts.to` (a `postgres://` URL) and/or `opts.to_file`.
pub async fn run(
    ctx: &Context,
    opts: &RestoreOptions,
    confirm: Confirm<'_>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let selector = opts.selector.clone().unwrap_or(Selector::Latest);
    let catalog = repo::catalog(ctx.store.as_ref(), opts.target.as_deref(), &ctx.signing).await?;
    let entries = catalog.entries.clone();
    let entry = catalog.pick(opts.target.as_deref(), &selector, chrono::Utc::now())?;
    // Origin before anything else: an untrusted backup never reaches a target.
    crate::trust::require_trusted(
        &entry.trust,
        &entry.manifest.id,
        &entry.manifest.target,
        &ctx.signing,
        opts.trust_unsigned,
    )?;
    crate::backup::physical::require_logical(&entry.manifest, "a restore into a database or file")?;
    let m = entry.manifest;
    let measured = crate::rto::newest(&entries, &m.target);
    let identities = ctx.identities()?;
    let details = fetch_details(ctx, &m, &identities).await?;
    let backup = Backup {
        manifest: &m,
        details: &details,
        identities: &identities,
    };
    let to = opts.to.as_deref().map(To::Url);
    restore(ctx, &backup, to, opts, confirm, measured.as_ref(), started).await
}

/// A backup chosen and opened: its manifest, its decrypted details and the identities that
/// decrypt its objects.
#[derive(Clone, Copy)]
pub struct Backup<'a> {
    pub manifest: &'a Manifest,
    pub details: &'a BackupDetails,
    pub identities: &'a Identities,
}

/// Restore `backup` into the database of `to` (created when missing), for a caller that has
/// chosen and opened the backup already and holds the connection (verify). Nobody is asked;
/// `opts.selector`, `opts.target` and `opts.to` are not used.
pub async fn run_into(
    ctx: &Context,
    backup: &Backup<'_>,
    to: &ConnInfo,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    restore(
        ctx,
        backup,
        Some(To::Conn(to)),
        opts,
        None,
        None,
        Instant::now(),
    )
    .await
}

/// Where the database restore goes: a URL as the operator wrote it (parsed when the target
/// is inspected), or a connection already made.
enum To<'a> {
    Url(&'a str),
    Conn(&'a ConnInfo),
}

/// A restore's request once checked: what every step after the checks reads.
pub(super) struct Request<'a> {
    pub(super) ctx: &'a Context,
    pub(super) m: &'a Manifest,
    pub(super) details: &'a BackupDetails,
    pub(super) identities: &'a Identities,
    pub(super) opts: &'a RestoreOptions,
    pub(super) jobs: u32,
    pub(super) temp_dir: PathBuf,
}

/// A restore past its gates: the plan shown, the target inspected (none: `--to-file` alone),
/// the globals script when one is restored or written, the clocks.
struct Approved {
    plan: Plan,
    target: Option<target::TargetState>,
    globals_sql: Option<Vec<u8>>,
    seconds: BTreeMap<String, f64>,
    started: Instant,
}

async fn restore(
    ctx: &Context,
    backup: &Backup<'_>,
    to: Option<To<'_>>,
    opts: &RestoreOptions,
    confirm: Confirm<'_>,
    measured: Option<&crate::rto::Measured>,
    started: Instant,
) -> Result<RestoreReport> {
    let layout = layout_of(backup.manifest)?;
    let sections = sections_of(layout);
    // Everything the operator asked for is checked before the first side effect.
    let r = check_request(ctx, backup, opts, sections.is_some())?;
    // Inspect the target before spending time on the download.
    let target = match to {
        Some(To::Url(url)) => Some(inspect_target(ConnInfo::parse(url)?).await?),
        Some(To::Conn(conn)) => Some(inspect_target(conn.clone()).await?),
        None => None,
    };
    // --with-globals: the roles it would create with powers are named in the plan.
    let early_globals = match &target {
        Some(t) if opts.with_globals => {
            let sql = fetch_globals(ctx, r.m, r.identities, None).await?;
            let roles = globals::powerful_roles(&t.conn, &sql).await?;
            Some((sql, roles))
        }
        _ => None,
    };
    let roles = early_globals.as_ref().map(|(_, roles)| roles.as_slice());
    let plan = plan::build(&r, sections.as_ref(), target.as_ref(), measured, roles);
    if let Some(gap) = &plan.at_gap {
        tracing::warn!("{gap}");
    }
    let seconds = BTreeMap::new();
    if let Some(t) = &target {
        t.check_accepts(r.m.server_major, opts)?;
        // Ownership the target cannot satisfy: say so before anything is touched.
        if !opts.with_globals && !opts.no_owner {
            t.check_owners(r.details).await?;
        }
    }
    if opts.dry_run {
        return Ok(RestoreReport::not_restored(plan, seconds));
    }
    // Roles with powers need their own flag: refused before anything is changed.
    if let Some((_, roles)) = &early_globals {
        globals::check_allowed(roles, opts, &format!("backup {}", r.m.id))?;
    }
    if let Some(ask) = confirm {
        ask(&plan)?;
    }
    let run = Approved {
        plan,
        target,
        globals_sql: globals_script(&r, early_globals.map(|(sql, _)| sql)).await?,
        seconds,
        started,
    };
    match (sections, layout) {
        (Some(s), _) => restore_in_sections(&r, s, run).await,
        (None, Layout::Single(dump)) => single::restore_single(&r, dump, run).await,
        (None, Layout::Sections { .. }) => Err(Error::new(
            Kind::Failed,
            "unreachable: a layout of sections",
        )),
    }
}

/// The backup's archive objects; a backup listing none is damaged.
fn layout_of(m: &Manifest) -> Result<Layout<'_>> {
    m.layout().ok_or_else(|| {
        Error::new(
            Kind::Integrity,
            format!(
                "backup {} lists no archive objects (no dump, or not every section)",
                m.id
            ),
        )
        .with_hint("restore an older backup (`dr list`) and investigate the repository")
    })
}

/// The sections of a format-2 backup; `None` for a single archive.
fn sections_of(layout: Layout<'_>) -> Option<layout::Sections<'_>> {
    match layout {
        Layout::Single(_) => None,
        Layout::Sections {
            pre_data,
            data,
            post_data,
        } => Some(layout::Sections {
            pre: pre_data,
            data,
            post: post_data,
        }),
    }
}

/// The operator's request, checked before the first side effect: the selection, the
/// `--to-file` directory, `--jobs`; with the jobs and the temp dir it resolves to.
fn check_request<'a>(
    ctx: &'a Context,
    backup: &Backup<'a>,
    opts: &'a RestoreOptions,
    in_sections: bool,
) -> Result<Request<'a>> {
    let m = backup.manifest;
    check_selection(backup.details, opts, m)?;
    if let (Some(dir), true) = (&opts.to_file, in_sections) {
        to_file::check_output_dir(dir)?;
    }
    let jobs = jobs_of(opts)?;
    let temp_dir = temp_dir_of(ctx, opts);
    Ok(Request {
        ctx,
        m,
        details: backup.details,
        identities: backup.identities,
        opts,
        jobs,
        temp_dir,
    })
}

/// `--jobs`, default the host's CPUs.
fn jobs_of(opts: &RestoreOptions) -> Result<u32> {
    if opts.jobs == Some(0) {
        return Err(Error::config("--jobs must be at least 1"));
    }
    Ok(opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(2))
            .unwrap_or(2)
    }))
}

/// `--temp-dir`, else `restore.temp_dir`, else the system's.
fn temp_dir_of(ctx: &Context, opts: &RestoreOptions) -> PathBuf {
    opts.temp_dir
        .clone()
        .or_else(|| ctx.config.restore.temp_dir.clone())
        .unwrap_or_else(std::env::temp_dir)
}

/// The globals script: to a file (`--globals-to-file`), or to memory for `--with-globals`
/// (the one fetched for the plan when there is one).
async fn globals_script(r: &Request<'_>, early: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
    let opts = r.opts;
    Ok(match (early, &opts.globals_to_file) {
        (Some(sql), None) => Some(sql),
        _ if opts.with_globals || opts.globals_to_file.is_some() => {
            Some(fetch_globals(r.ctx, r.m, r.identities, opts.globals_to_file.as_deref()).await?)
        }
        _ => None,
    })
}

/// A backup in sections: written to `--to-file DIR` when asked, then streamed into the
/// target (when there is one).
async fn restore_in_sections(
    r: &Request<'_>,
    s: layout::Sections<'_>,
    run: Approved,
) -> Result<RestoreReport> {
    let Approved {
        plan,
        target,
        globals_sql,
        mut seconds,
        started,
    } = run;
    let opts = r.opts;
    let fetch_clock = Instant::now();
    if let Some(dir) = &opts.to_file {
        to_file::write_dir(r.ctx, r.m, &s, r.identities, dir, r.jobs).await?;
        seconds.insert("write_files".into(), fetch_clock.elapsed().as_secs_f64());
    }
    let Some(target) = target else {
        seconds.insert("total".into(), started.elapsed().as_secs_f64());
        return Ok(RestoreReport::not_restored(plan, seconds));
    };
    let origin = layout::Origin::backup(r.m);
    let load = layout::Load {
        ctx: r.ctx,
        origin: &origin,
        details: r.details,
        identities: r.identities,
        target: &target,
        opts,
        jobs: r.jobs,
        globals: globals_sql.as_deref(),
        temp_dir: &r.temp_dir,
        files_in: opts.to_file.as_deref(),
        check_first: plan.check_first,
    };
    let outcome = sections::restore_sections(&load, s, &mut seconds).await?;
    finish(
        plan,
        &target,
        outcome,
        seconds,
        started,
        &origin.what,
        opts,
        false,
    )
}

/// The report of a restore that reached the end, or the error listing what went wrong.
#[allow(clippy::too_many_arguments)]
fn finish(
    plan: Plan,
    target: &target::TargetState,
    outcome: load::Outcome,
    mut seconds: BTreeMap<String, f64>,
    started: Instant,
    what: &str,
    opts: &RestoreOptions,
    created: bool,
) -> Result<RestoreReport> {
    seconds.insert("total".into(), started.elapsed().as_secs_f64());
    let report = RestoreReport {
        plan,
        restored: true,
        tables: outcome.tables,
        mismatches: outcome.mismatches,
        errors: outcome.errors,
        skipped_foreign_keys: outcome.skipped_foreign_keys,
        seconds,
        recovered: None,
    };
    if !report.errors.is_empty() || !report.mismatches.is_empty() {
        return Err(finished_with_errors(
            what,
            &target.conn,
            &report.errors,
            &report.mismatches,
            opts,
            created,
        ));
    }
    Ok(report)
}

/// A restore of `what` ("backup ID") that ran to the end with `pg_restore` errors or counts
/// that differ: what went wrong and the next step. `created`: the database was created by
/// this restore (and is dropped: the hint is then to restore again as before).
pub(super) fn finished_with_errors(
    what: &str,
    conn: &ConnInfo,
    errors: &[String],
    mismatches: &[String],
    opts: &RestoreOptions,
    created: bool,
) -> Error {
    let mut msg = format!("restore of {what} into {conn} finished with errors:");
    for e in errors.iter().take(50) {
        msg.push_str(&format!("\n  {e}"));
    }
    if errors.len() > 50 {
        msg.push_str(&format!("\n  ... and {} more", errors.len() - 50));
    }
    for mm in mismatches {
        msg.push_str(&format!("\n  {mm}"));
    }
    Error::new(Kind::Failed, msg).with_hint(failure_hint(errors, opts, created))
}

/// The next step after a restore with errors, from what the errors say: a missing role or
/// extension gets its own advice, anything else the general one.
fn failure_hint(errors: &[String], opts: &RestoreOptions, created: bool) -> String {
    let again = if created {
        "restore again (the database is created anew)"
    } else if opts.tables.is_empty() && opts.schemas.is_empty() {
        "restore again with --clean"
    } else {
        "drop the database and restore into it again"
    };
    let mut hint = String::from(if created {
        ""
    } else {
        "the database is partially restored; "
    });
    if errors
        .iter()
        .any(|e| e.contains("role \"") && e.contains("does not exist"))
    {
        hint.push_str("a role is missing: pass --with-globals or --no-owner, then ");
    } else if errors.iter().any(|e| {
        e.contains("extension")
            && (e.contains("not available") || e.contains("could not open extension control file"))
    }) {
        hint.push_str("an extension is missing on the target server: install it, then ");
    } else {
        hint.push_str("fix the cause above, then ");
    }
    hint.push_str(again);
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_roles_only_when_a_role_is_missing() {
        let opts = RestoreOptions::default();
        let role = failure_hint(
            &[r#"pg_restore: error: role "reporter" does not exist"#.to_string()],
            &opts,
            false,
        );
        assert!(role.contains("--with-globals"));
        let other = failure_hint(
            &[r#"pg_restore: error: relation "public.x" does not exist"#.to_string()],
            &opts,
            false,
        );
        assert!(!other.contains("role"));
        assert!(!other.contains("extension"));
        assert!(other.contains("--clean"));
    }
}
