//! `dr daemon [--dry-run]`.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use dr_core::{Context, Result};
use dr_daemon as daemon;
use dr_observe::report::{Reporter, RetryPolicy};

use crate::cli::Global;

pub async fn run(g: &Global, dry_run: bool, count: usize) -> Result<ExitCode> {
    let config = super::load_config(g)?;
    let jobs = daemon::load_jobs(&config)?;
    // The start's checks, for the dry run too: it must not pass where the start would fail.
    daemon::preflight(&config, &jobs)?;
    let reporter = Reporter::from_config(&config)?;
    if dry_run {
        // Data on stdout, one line per run: job, kind, targets, UTC time, local time.
        let now = Utc::now();
        for j in &jobs {
            crate::note!(
                "job `{}` from {}: {} `{}` in {}",
                j.name,
                j.source.display(),
                j.kind,
                j.schedule.expression(),
                j.schedule.timezone()
            );
            let runs = j
                .schedule
                .upcoming(now, count)
                .map_err(dr_core::Error::config)?;
            for t in runs {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    j.name,
                    j.kind,
                    j.targets.join(","),
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    t.with_timezone(&j.schedule.timezone())
                        .format("%a %Y-%m-%d %H:%M:%S %Z")
                );
            }
        }
        // The WAL streams are not scheduled: they run as long as the daemon does.
        for t in config.targets.iter().filter(|t| {
            t.wal
                .as_ref()
                .is_some_and(|w| w.mode() == dr_config::WalMode::Stream)
        }) {
            crate::note!(
                "WAL of `{}` streamed for as long as the daemon runs (mode = \"stream\")",
                t.name
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let reporter = Arc::new(reporter.with_retries(RetryPolicy {
        retries: config.daemon.retries,
        backoff: std::time::Duration::from_secs(config.daemon.retry_backoff_secs),
    }));
    let mut ctx = Context::open(config).await?;
    ctx.scheduled = true;
    ctx.cancel = crate::signals::second();
    let ctx = Arc::new(ctx);
    let shutdown = crate::signals::first();
    tracing::info!("dr daemon starting with {} job(s)", jobs.len());
    let outcome = daemon::run(ctx, jobs, reporter, shutdown).await?;
    tracing::info!(
        "dr daemon stopped: {} run(s), {} failed{}",
        outcome.runs,
        outcome.failures,
        if outcome.cancelled {
            "; a running job was cancelled"
        } else {
            ""
        }
    );
    Ok(if outcome.cancelled {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
