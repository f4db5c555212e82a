//! `dr wal fetch NAME DEST`: PostgreSQL's `restore_command` (`dr_core::wal::fetch`). Nothing
//! on stdout: the exit status is the answer PostgreSQL reads (the fetch table of
//! docs/EXIT_CODES.md, see `crate::exit`).
//!
//! With `--spool DIR`, a segment a prefetch worker already downloaded (and verified) is served
//! from DIR, and after serving a worker is started for the next ones
//! (`dr_core::wal::prefetch`): a detached `dr wal prefetch`, with this command's config and
//! env file, in its own process group (PostgreSQL waits for this command only).

use std::path::Path;
use std::process::{ExitCode, Stdio};

use dr_core::wal::fetch::{self, Fetched, Request};
use dr_core::wal::prefetch;
use dr_core::{Context, Result};

use crate::cli::Global;

pub async fn run(
    ctx: &Context,
    global: &Global,
    target: Option<&str>,
    name: &str,
    dest: &Path,
    spool: Option<&Path>,
) -> Result<ExitCode> {
    let target = fetch::target(ctx, target).await?;
    if let Some(dir) = spool {
        if prefetch::take(dir, name, dest).is_some() {
            tracing::debug!("{name} served from the prefetch spool {}", dir.display());
            prefetch::forget_before(dir, name);
            start_worker(global, &target, dir, name);
            return Ok(ExitCode::SUCCESS);
        }
    }
    match fetch::fetch(ctx, &Request::new(&target, name, dest)).await? {
        Fetched::Written(served) => {
            if let Some(dir) = spool.filter(|_| !served.is_partial()) {
                prefetch::forget_before(dir, name);
                start_worker(global, &target, dir, name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Fetched::NotFound => Ok(ExitCode::from(crate::exit::NOT_IN_ARCHIVE)),
    }
}

/// `dr wal prefetch`: the worker itself. Its failures are logged only (the foreground fetch
/// repeats the download and reports).
pub async fn prefetch(ctx: &Context, target: &str, spool: &Path, after: &str) -> Result<ExitCode> {
    if let Err(e) = prefetch::run(ctx, target, spool, after).await {
        tracing::debug!("prefetch after {after}: {}", e.summary());
    }
    Ok(ExitCode::SUCCESS)
}

/// Start the worker for the segments after `name`, detached; a failure to start only costs
/// speed.
fn start_worker(global: &Global, target: &str, spool: &Path, name: &str) {
    if name
        .parse::<dr_catalog::wal::WalFile>()
        .ok()
        .and_then(|f| match f {
            dr_catalog::wal::WalFile::Segment(s) => Some(s),
            _ => None,
        })
        .is_none()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut c = std::process::Command::new(exe);
    if let Some(config) = &global.config {
        c.arg("--config").arg(config);
    }
    if let Some(env) = &global.env_file {
        c.arg("--env-file").arg(env);
    }
    c.args(["-q", "wal", "prefetch", "--target", target, "--spool"])
        .arg(spool)
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    if let Err(e) = c.spawn() {
        tracing::debug!("cannot start the prefetch worker: {e}");
    }
}
