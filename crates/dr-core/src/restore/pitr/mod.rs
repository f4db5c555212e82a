//! `dr restore --at TIME|LSN|latest --to-dir DIR`: a physical base backup and the WAL archive
//! made into a data directory that recovers to the chosen point (docs/design/PITR.md §6).
//!
//! Order of work, each step a gate for the next: read the base backups and the WAL records;
//! plan (base, timeline, every segment recovery needs — a missing one fails here, naming it,
//! before anything is written); check DIR (absent or empty); stream the base backup into it
//! (`unpack`); write the recovery settings; with `--start`, run the server and prove where
//! recovery stopped (`start`).
//!
//! `--at … --to URL` for a target with WAL (`into_db`) does the same into a throwaway
//! `sandbox` under the temp dir, then streams the database from there.

pub mod into_db;
pub(crate) mod sandbox;
mod start;
mod unpack;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dr_catalog::wal::plan::{self, Plan, Target};
use dr_catalog::{BackupKind, Manifest, ObjectRole};
pub use dr_pg::recovery::Then;
use serde::Serialize;

use crate::repo;
use crate::wal::catalog::{self, WalCatalog};
use crate::{human_bytes, Context, Error, Kind, Result};

pub use start::Reached;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct PitrOptions {
    pub target: Option<String>,
    pub at: Target,
    /// `--timeline`: recover onto this timeline instead of the one the plan picks.
    pub timeline: Option<u32>,
    pub dir: PathBuf,
    /// Empty a non-empty DIR first (never one with a running server in it).
    pub force: bool,
    pub dry_run: bool,
    /// Start the server, wait for the target, report where recovery stopped, then `then`.
    pub start: bool,
    pub then: Then,
    /// How the server runs `dr wal fetch`: this binary, `--config`, `--env-file` (absolute).
    pub fetch_argv: Vec<String>,
}

/// The plan, as printed by `--dry-run` and before a restore.
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    pub target: String,
    pub recovery_target: String,
    pub base_id: String,
    pub base_start_lsn: String,
    pub base_stop_lsn: String,
    pub base_stopped_at: String,
    pub timeline: u32,
    pub timeline_reason: String,
    pub segments: usize,
    pub first_segment: String,
    pub last_segment: String,
    pub wal_bytes: u64,
    pub partial: Option<String>,
    pub window: String,
    pub base_bytes: u64,
    pub dir: PathBuf,
    pub server_major: u32,
}

impl fmt::Display for PitrPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "restore plan for `{}` to {}",
            self.target, self.recovery_target
        )?;
        writeln!(
            f,
            "  base backup   {} (PostgreSQL {}, WAL {}..{}, ended {})",
            self.base_id,
            self.server_major,
            self.base_start_lsn,
            self.base_stop_lsn,
            self.base_stopped_at
        )?;
        writeln!(
            f,
            "  timeline      {} ({})",
            self.timeline, self.timeline_reason
        )?;
        writeln!(
            f,
            "  WAL           {} segments, {}..{}, {} stored",
            self.segments,
            self.first_segment,
            self.last_segment,
            human_bytes(self.wal_bytes)
        )?;
        if let Some(p) = &self.partial {
            writeln!(f, "                ends in a partial segment uploaded {p}")?;
        }
        writeln!(f, "  window        {}", self.window)?;
        writeln!(
            f,
            "  into          {} (needs {} for the base, plus room for WAL replay)",
            self.dir.display(),
            human_bytes(self.base_bytes)
        )
    }
}

/// What was done.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub plan: PitrPlan,
    pub restored: bool,
    pub files: u64,
    pub bytes: u64,
    /// The command that starts recovery (when `--start` was not given).
    pub start_command: String,
    /// With `--start`: where recovery stopped.
    pub reached: Option<Reached>,
    pub seconds: f64,
}

/// Plan, and unless `--dry-run`, restore.
pub async fn run(ctx: &Context, opts: &PitrOptions) -> Result<PitrReport> {
    let began = Instant::now();
    let Planned {
        target,
        chosen,
        manifest,
        ..
    } = plan(ctx, opts.target.as_deref(), opts.at, opts.timeline).await?;
    let manifest = &manifest;
    let summary = summarize(&target, &chosen, manifest, &opts.dir);
    if opts.dry_run {
        return Ok(report(summary, None, String::new(), None, began));
    }
    prepare_dir(&opts.dir, opts.force)?;
    let written = match unpack::base_into(ctx, manifest, &opts.dir).await {
        Ok(w) => w,
        Err(e) => {
            remove_contents(&opts.dir);
            return Err(e.context(format!(
                "restoring base backup {} into {}",
                summary.base_id,
                opts.dir.display()
            )));
        }
    };
    write_settings(
        &opts.dir,
        &target,
        &chosen,
        &opts.fetch_argv,
        opts.then,
        false,
    )?;
    if let Some(user) = start::hand_over(&opts.dir)? {
        tracing::info!(
            "{} now belongs to {user}, who runs the server",
            opts.dir.display()
        );
    }
    let bin = crate::restore::target_pg_bin_dir(&ctx.config, &target);
    let start_command = start::command(bin, &opts.dir);
    let reached = if opts.start {
        Some(
            start::recover(
                ctx,
                &opts.dir,
                manifest.server_major,
                bin,
                &chosen,
                start::promotes(ctx, &target, opts.then),
            )
            .await?,
        )
    } else {
        None
    };
    Ok(report(
        summary,
        Some(written),
        start_command,
        reached,
        began,
    ))
}

fn report(
    plan: PitrPlan,
    written: Option<unpack::Written>,
    start_command: String,
    reached: Option<Reached>,
    began: Instant,
) -> PitrReport {
    let w = written.unwrap_or_default();
    PitrReport {
        restored: w.files > 0,
        plan,
        files: w.files,
        bytes: w.bytes,
        start_command,
        reached,
        seconds: began.elapsed().as_secs_f64(),
    }
}

/// A recovery planned: whose, the plan, the chosen base backup's manifest, the size of a WAL
/// segment, and the target's backups as listed.
pub(crate) struct Planned {
    pub(crate) target: String,
    pub(crate) chosen: Plan,
    pub(crate) manifest: Manifest,
    pub(crate) segment_bytes: u64,
    pub(crate) entries: Vec<repo::BackupEntry>,
}

/// The plan to recover `target` (`--target`, else the only target with WAL) to `at`: from
/// the trusted physical backups and WAL records in the repository. Errors say the window or
/// name the missing segment; nothing is written.
pub(crate) async fn plan(
    ctx: &Context,
    target: Option<&str>,
    at: Target,
    timeline: Option<u32>,
) -> Result<Planned> {
    let target = crate::wal::fetch::target(ctx, target).await?;
    let entries = repo::list(ctx.store.as_ref(), Some(&target), &ctx.signing).await?;
    plan_with(ctx, target, entries, at, timeline).await
}

/// [`plan`] for a target whose backups were listed (`entries`).
pub(crate) async fn plan_with(
    ctx: &Context,
    target: String,
    entries: Vec<repo::BackupEntry>,
    at: Target,
    timeline: Option<u32>,
) -> Result<Planned> {
    let physical: Vec<&repo::BackupEntry> = entries
        .iter()
        .filter(|e| e.manifest.kind == BackupKind::Physical)
        .collect();
    let wal = catalog::load(ctx, &target).await?;
    for (key, why) in &wal.refused {
        tracing::warn!("WAL record `{key}` is not used: {why}");
    }
    let (chosen, manifest) = plan_restore(&target, &physical, &wal, at, timeline)?;
    let manifest = manifest.clone();
    Ok(Planned {
        target,
        chosen,
        manifest,
        segment_bytes: wal.segment_size().bytes(),
        entries,
    })
}

/// The plan from the catalog's physical backups and WAL records; errors say the window or
/// name the missing segment.
fn plan_restore<'a>(
    target: &str,
    physical: &[&'a repo::BackupEntry],
    wal: &WalCatalog,
    at: Target,
    timeline: Option<u32>,
) -> Result<(Plan, &'a Manifest)> {
    if physical.is_empty() {
        return Err(Error::new(
            Kind::Integrity,
            format!("`{target}` has no physical base backup: point-in-time recovery starts from one"),
        )
        .with_hint(format!("take one with `dr backup --physical --target {target}` (WAL must be archived: `dr check`)")));
    }
    if wal.is_empty() && !wal.refused.is_empty() {
        let (key, why) = &wal.refused[0];
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "`{target}` has no usable WAL: all {} records in the repository are refused (`{key}`: {why})",
                wal.refused.len()
            ),
        )
        .with_hint("a restore host trusts WAL only from a key it knows: add the public key of the host that streams or archives it to `[signing] trusted` (or set DR_SIGNING_KEY_FILE to that host's key), then run this again"));
    }
    if wal.is_empty() {
        return Err(Error::new(
            Kind::Integrity,
            format!("`{target}` has no WAL in the repository: a base backup alone cannot be recovered to a point"),
        )
        .with_hint("turn on WAL archiving for the target ([targets.wal], `dr check`)"));
    }
    let entries: Vec<repo::BackupEntry> = physical.iter().map(|e| (*e).clone()).collect();
    let bases = catalog::bases(&entries);
    let chosen = plan::plan(
        &bases,
        &wal.archived,
        &wal.timelines,
        wal.segment_size(),
        at,
        timeline,
    )
    .map_err(|e| {
        let kind = match e {
            plan::PlanError::Outside { .. } => Kind::Config,
            _ => Kind::Integrity,
        };
        let hint = e.hint();
        Error::new(kind, e.to_string()).with_hint(hint)
    })?;
    let manifest = physical
        .iter()
        .map(|e| &e.manifest)
        .find(|m| m.id.to_string() == chosen.base.id)
        .ok_or_else(|| {
            Error::new(
                Kind::Failed,
                format!("the plan chose base {} which is not listed", chosen.base.id),
            )
        })?;
    Ok((chosen, manifest))
}

fn summarize(target: &str, chosen: &Plan, manifest: &Manifest, dir: &Path) -> PitrPlan {
    PitrPlan {
        target: target.to_string(),
        recovery_target: chosen.target.to_string(),
        base_id: chosen.base.id.clone(),
        base_start_lsn: chosen.base.start.to_string(),
        base_stop_lsn: chosen.base.stop.to_string(),
        base_stopped_at: chosen
            .base
            .stopped_at
            .format("%Y-%m-%d %H:%M:%SZ")
            .to_string(),
        timeline: chosen.timeline,
        timeline_reason: chosen.chosen.to_string(),
        segments: chosen.segments.len(),
        first_segment: chosen
            .segments
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        last_segment: chosen
            .segments
            .last()
            .map(ToString::to_string)
            .unwrap_or_default(),
        wal_bytes: chosen.bytes,
        partial: chosen
            .partial
            .as_ref()
            .map(|p| p.pushed_at.format("%Y-%m-%d %H:%M:%SZ").to_string()),
        window: chosen.window.to_string(),
        base_bytes: manifest
            .object(ObjectRole::BaseTar)
            .map(|o| o.raw_bytes)
            .unwrap_or_default(),
        dir: dir.to_path_buf(),
        server_major: manifest.server_major,
    }
}

/// DIR must be absent or empty; `--force` empties it, but never under a running server.
fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    let entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(
                Error::new(Kind::Failed, format!("cannot read {}: {e}", dir.display()))
                    .with_hint("give --to-dir a directory dr can create or write"),
            )
        }
    };
    if entries.is_empty() {
        return Ok(());
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::new(
            Kind::Refused,
            format!("{} holds a data directory with a postmaster.pid: a server may be running in it; nothing was changed", dir.display()),
        )
        .with_hint("stop that server, or choose another --to-dir"));
    }
    if !force {
        return Err(Error::new(
            Kind::Refused,
            format!(
                "{} is not empty ({} entries); nothing was changed",
                dir.display(),
                entries.len()
            ),
        )
        .with_hint(
            "choose an empty or new directory, or add --force to delete what is in it first",
        ));
    }
    tracing::warn!("--force: deleting the contents of {}", dir.display());
    for e in entries {
        let p = e.path();
        let r = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|err| {
            Error::new(
                Kind::Failed,
                format!("--force: cannot delete {}: {err}", p.display()),
            )
        })?;
    }
    Ok(())
}

/// After a failed unpack: what this restore wrote goes (DIR was empty or absent before).
fn remove_contents(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Where the recovered server's `dr wal fetch` keeps prefetched segments (relative to the
/// data directory, where PostgreSQL runs `restore_command`).
pub const PREFETCH_SPOOL: &str = "pg_wal/.dr-fetch";

/// `recovery.signal` and the settings in `postgresql.auto.conf` (read last, so they win).
fn write_settings(
    dir: &Path,
    target: &str,
    chosen: &Plan,
    fetch_argv: &[String],
    then: Then,
    exclusive: bool,
) -> Result<()> {
    let mut argv: Vec<&str> = fetch_argv.iter().map(String::as_str).collect();
    // The prefetch spool in pg_wal: serving a prefetched segment is a rename.
    argv.extend([
        "wal",
        "fetch",
        "--target",
        target,
        "--spool",
        PREFETCH_SPOOL,
    ]);
    let command = dr_pg::recovery::restore_command(&argv).map_err(|e| {
        Error::new(Kind::Config, e.to_string())
            .with_hint("move the config or env file to a path without line breaks")
    })?;
    let at = match chosen.target {
        Target::Time(t) => dr_pg::recovery::Target::Time(t),
        Target::Lsn(l) if exclusive => dr_pg::recovery::Target::BeforeLsn(l),
        Target::Lsn(l) => dr_pg::recovery::Target::Lsn(l),
        Target::Latest => dr_pg::recovery::Target::Latest,
    };
    let settings = dr_pg::recovery::settings(&command, &at, chosen.timeline, then);
    let write = |name: &str, append: bool, text: &str| -> Result<()> {
        use std::io::Write;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()).map(|_| f))
            .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", path.display())))?;
        f.flush().ok();
        Ok(())
    };
    // A server whose configuration lives outside its data directory (Debian's
    // /etc/postgresql/MAJOR/main) leaves none in the base backup: PostgreSQL will not start
    // without the files. Its defaults, and the local socket for the OS user of the same name.
    for (name, text) in [
        ("postgresql.conf", "# dr restore --to-dir: the base backup held no postgresql.conf (the server kept it outside its data directory); PostgreSQL's defaults apply. Copy the settings production needs here.\n"),
        ("pg_hba.conf", "# dr restore --to-dir: the base backup held no pg_hba.conf; only local connections of the OS user of the same name.\nlocal all all peer\n"),
        ("pg_ident.conf", ""),
    ] {
        if !dir.join(name).exists() {
            tracing::warn!("the base backup holds no {name} (the server kept it outside its data directory): wrote a minimal one into {}", dir.display());
            write(name, false, text)?;
        }
    }
    write("postgresql.auto.conf", true, &settings)?;
    write("recovery.signal", false, "")?;
    Ok(())
}
