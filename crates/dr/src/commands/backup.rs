use crate::out;
use std::process::ExitCode;

use dr_config::TargetConfig;
use dr_core::{human_bytes, Context, Error, Result};
use dr_observe::report::Reporter;

/// `--jobs N`: the data streams of this run, in place of `backup.jobs`.
pub fn set_jobs(ctx: &mut Context, jobs: Option<u32>) -> Result<()> {
    if let Some(n) = jobs {
        if !(1..=dr_config::MAX_BACKUP_JOBS).contains(&n) {
            return Err(Error::config(format!(
                "--jobs {n} is out of range; nothing was backed up"
            ))
            .with_hint(format!(
                "use 1 to {} data streams",
                dr_config::MAX_BACKUP_JOBS
            )));
        }
        ctx.config.backup.jobs = Some(n);
    }
    Ok(())
}

/// Back up each selected target; every target is attempted, the exit code reflects the worst.
/// A `databases = "all"` target is every database of its server, each backed up as its own
/// target `NAME.DATABASE`; `--target NAME.DATABASE` backs up one of them.
pub async fn run(ctx: &Context, reporter: &Reporter, target: Option<&str>) -> Result<ExitCode> {
    let one = match target {
        Some(n) => ctx.config.database_target(n).map_err(Error::from)?,
        None => None,
    };
    let selected: Vec<TargetConfig> = match one {
        Some(t) => vec![t],
        None => ctx
            .config
            .select_targets(target)
            .map_err(Error::from)?
            .into_iter()
            .cloned()
            .collect(),
    };
    let mut first_error: Option<Error> = None;
    let mut targets = Vec::new();
    for t in selected {
        match dr_core::backup::expand(&t).await {
            Ok(v) => targets.extend(v),
            Err(e) => {
                crate::output::print_error(&e);
                first_error.get_or_insert(e);
            }
        }
    }
    for t in &targets {
        if ctx.cancel.is_cancelled() {
            break;
        }
        match reporter.backup(ctx, t).await {
            Ok(m) => {
                // -q: nothing at all on success, so cron mails only failures.
                if !crate::logging::quiet() {
                    out!("{}\t{}", m.target, m.id);
                }
                crate::note!(
                    "backup {} of `{}` complete: {} stored ({} raw)",
                    m.id,
                    m.target,
                    human_bytes(m.stored_bytes()),
                    human_bytes(m.raw_bytes())
                );
            }
            Err(e) => {
                crate::output::print_error(&e);
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        // Already printed; keep the kind for the exit code.
        Some(e) => Ok(crate::exit::code(e.kind)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `dr backup --physical`: a base backup of each selected target's cluster, one after the
/// other; every target is attempted, the exit code reflects the first failure. A
/// `databases = "all"` target is backed up once, as the server it names.
pub async fn run_physical(ctx: &Context, target: Option<&str>) -> Result<ExitCode> {
    let selected: Vec<TargetConfig> = ctx
        .config
        .select_targets(target)
        .map_err(Error::from)?
        .into_iter()
        .cloned()
        .collect();
    let mut first_error: Option<Error> = None;
    for t in &selected {
        if ctx.cancel.is_cancelled() {
            break;
        }
        match dr_core::backup::run_physical(ctx, t).await {
            Ok(m) => {
                if !crate::logging::quiet() {
                    out!("{}\t{}", m.target, m.id);
                }
                let wal = m
                    .physical
                    .as_ref()
                    .map(|p| {
                        format!(
                            ", WAL {}..{} on timeline {}",
                            p.start_lsn, p.stop_lsn, p.timeline
                        )
                    })
                    .unwrap_or_default();
                crate::note!(
                    "physical backup {} of `{}` complete: {} stored ({} raw){wal}",
                    m.id,
                    m.target,
                    human_bytes(m.stored_bytes()),
                    human_bytes(m.raw_bytes())
                );
            }
            Err(e) => {
                crate::output::print_error(&e);
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Ok(crate::exit::code(e.kind)),
        None => Ok(ExitCode::SUCCESS),
    }
}
