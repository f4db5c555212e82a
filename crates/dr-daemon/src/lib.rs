//! `dr daemon`: run the jobs of `schedules/*.toml` and `[[schedules]]` on their cron
//! expressions. dr-daemon owns the scheduler (when each job runs next, catch-up), the
//! dispatch of target runs (slots, no overlap, shutdown) and the writer of the daemon's
//! beacon ([`dr_catalog::beacon`] is its format). The jobs come validated from
//! [`dr_config::jobs`]; each run goes through [`dr_observe::report`].
//!
//! - **Timing.** The daemon sleeps until the earliest next run, at most 30 s at a time, and
//!   re-reads the wall clock after every sleep: a clock that jumps forward runs each job whose
//!   time was skipped once (not once per skipped occurrence); a clock that jumps back delays
//!   nothing already planned.
//! - **No overlap.** A job's run for a target is skipped (and logged) while its previous run for
//!   that target is still queued or running. Across processes and hosts the repository lock
//!   ([`dr_core::lock`]) keeps backups and prunes of one target apart; a daemon's run takes over
//!   the lock of a crashed run on this host, and waits out one nobody refreshes
//!   ([`Context::scheduled`]), so a killed and restarted daemon still makes its catch-up run. At most
//!   `daemon.max_concurrent_jobs` target runs (default 1) go at once; the others are logged as
//!   queued and wait for a slot.
//! - **Missed runs.** On start, a job runs once at once for each target whose last run is older
//!   than the schedule's period (a scheduled time passed since it): for `backup` the last run
//!   is the target's newest complete backup (from any source: daemon, cron, by hand; a target
//!   with no backup at all counts as missed); for `verify` the newest verification (targets
//!   without any backup are skipped); `prune` is never caught up, it runs at its next time.
//! - **Shutdown.** On SIGTERM/SIGINT no new run starts and queued ones are dropped (each
//!   logged by name); running ones get
//!   `daemon.shutdown_grace_secs` (default 300) to finish, then are cancelled through
//!   [`Context::cancel`] (a backup aborts its upload and writes no manifest).
//! - **Beacon.** `daemon/{host}.json` in the repository is rewritten every minute and
//!   removed on a clean stop ([`dr_catalog::beacon`]); `dr status` reads it.
//! - **WAL streams.** Each target with `[targets.wal] mode = "stream"` is streamed for as long
//!   as the daemon runs (`dr wal stream`, restarted a minute after it fails).
//! - **Alerts and metrics** come from [`Reporter`]; `/metrics` is served on
//!   `daemon.metrics_address`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_catalog::manifest::BackupKind;
use dr_config::JobKind;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use tokio_util::sync::CancellationToken;

mod beacon;
mod dispatch;
mod wal_metrics;
mod wal_stream;
pub use dr_config::jobs::{self, load_jobs, preflight, verify_jobs_without_identity, Job};

use dr_core::{Context, Error, Kind, Result};
use dr_observe::metrics::Metrics;
use dr_observe::report::Reporter;

use dispatch::{dispatch, Shared};

/// The longest single sleep: the wall clock is re-read at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How a daemon run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Target runs that finished (successfully or not).
    pub runs: u64,
    pub failures: u64,
    /// A run had to be cancelled after the shutdown grace period.
    pub cancelled: bool,
}

/// The time of the last run of `kind` for `target`, from the repository listing; `None`
/// inside `Some` means "never"; an outer `None` means "not applicable: do not catch up".
fn last_run(
    kind: JobKind,
    target: &str,
    entries: &[dr_core::repo::BackupEntry],
) -> Option<Option<DateTime<Utc>>> {
    // A server target's runs are those of its databases.
    let mine = entries
        .iter()
        .filter(|e| dr_catalog::members::belongs_to(&e.manifest.target, target));
    match kind {
        JobKind::Backup | JobKind::BaseBackup => {
            let physical = kind == JobKind::BaseBackup;
            Some(
                mine.filter(|e| (e.manifest.kind == BackupKind::Physical) == physical)
                    .map(|e| e.manifest.started_at)
                    .max(),
            )
        }
        JobKind::Drill => {
            // Like verify: nothing to drill before the first base backup (skipped).
            let bases: Vec<_> = mine
                .filter(|e| e.manifest.kind == BackupKind::Physical)
                .collect();
            if bases.is_empty() {
                return None;
            }
            Some(
                bases
                    .iter()
                    .filter_map(|e| e.verification.as_ref().map(|v| v.verified_at))
                    .max(),
            )
        }
        JobKind::Verify => {
            let mine: Vec<_> = mine.collect();
            if mine.is_empty() {
                return None;
            }
            Some(
                mine.iter()
                    .filter_map(|e| e.verification.as_ref().map(|v| v.verified_at))
                    .max(),
            )
        }
        JobKind::Prune | JobKind::Copy => None,
    }
}

/// Run `jobs` until `shutdown` is cancelled; see the module docs.
pub async fn run(
    ctx: Arc<Context>,
    jobs: Vec<Job>,
    reporter: Arc<Reporter>,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    preflight(&ctx.config, &jobs)?;
    let daemon = &ctx.config.daemon;
    let grace = Duration::from_secs(daemon.shutdown_grace_secs);
    let metrics = reporter.metrics();
    for j in &jobs {
        for t in &j.targets {
            metrics.touch(t, j.kind.as_str());
        }
    }
    let server_stop = CancellationToken::new();
    let server = serve_metrics(daemon.metrics_address.as_deref(), &metrics, &server_stop).await?;
    let shared = Arc::new(Shared {
        ctx: Arc::clone(&ctx),
        reporter,
        semaphore: Arc::new(Semaphore::new(daemon.max_concurrent_jobs.max(1))),
        shutdown: shutdown.clone(),
        running: Mutex::new(BTreeMap::new()),
        runs: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        interrupted: AtomicBool::new(false),
    });
    let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
    let mut tasks = JoinSet::new();

    // `daemon/{host}.json`: `dr status` tells a running daemon from a schedule nobody runs.
    let beat_stop = CancellationToken::new();
    let beat = {
        let targets: BTreeSet<String> = jobs.iter().flat_map(|j| j.targets.clone()).collect();
        let (ctx, stop) = (Arc::clone(&ctx), beat_stop.clone());
        tokio::spawn(async move {
            beacon::keep(&ctx, targets.into_iter().collect(), stop).await;
        })
    };

    // The `dr_wal_*` series for targets with `[targets.wal]`.
    let wal = {
        let (ctx, metrics, stop) = (Arc::clone(&ctx), Arc::clone(&metrics), beat_stop.clone());
        tokio::spawn(async move { wal_metrics::keep(&ctx, metrics, stop).await })
    };

    // `mode = "stream"` targets: their WAL streams for as long as the daemon runs.
    let streams_stop = CancellationToken::new();
    let mut streams = JoinSet::new();
    for target in wal_stream::targets(&ctx) {
        streams.spawn(wal_stream::keep(
            Arc::clone(&ctx),
            target,
            streams_stop.clone(),
        ));
    }

    let start = Utc::now();
    catch_up(&shared, &mut tasks, &jobs, &metrics, start).await;
    schedule(&shared, &mut tasks, &jobs, start).await;
    let cancelled = drain(&shared, &mut tasks, grace).await;
    streams_stop.cancel();
    while streams.join_next().await.is_some() {}
    server_stop.cancel();
    beat_stop.cancel();
    let _ = beat.await;
    let _ = wal.await;
    if let Some(s) = server {
        let _ = s.await;
    }
    Ok(Outcome {
        runs: shared.runs.load(Ordering::SeqCst),
        failures: shared.failures.load(Ordering::SeqCst),
        cancelled: cancelled || shared.interrupted.load(Ordering::SeqCst),
    })
}

/// `/metrics` on `daemon.metrics_address`, when set, until `stop`.
async fn serve_metrics(
    addr: Option<&str>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::new(
            Kind::Unavailable,
            format!("cannot listen on daemon.metrics_address {addr}: {e}"),
        )
        .with_hint("pick a free port, or remove metrics_address")
    })?;
    tracing::info!("serving Prometheus metrics at http://{addr}/metrics");
    Ok(Some(tokio::spawn(dr_observe::metrics::serve(
        listener,
        Arc::clone(metrics),
        stop.clone(),
    ))))
}

/// Missed runs, and metrics from what the repository already holds.
async fn catch_up(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    jobs: &[Arc<Job>],
    metrics: &Metrics,
    start: DateTime<Utc>,
) {
    let ctx = &shared.ctx;
    match dr_core::repo::list(ctx.store.as_ref(), None, &ctx.signing).await {
        Ok(entries) => {
            // A future-dated backup (clock skew) says nothing about when a backup last ran:
            // counting it would suppress catch-up runs and freshness alerts until its date.
            // Nor does an untrusted one (a forgery must not suppress the next real backup).
            let entries: Vec<dr_core::repo::BackupEntry> = entries
                .into_iter()
                .filter(|e| !e.manifest.id.is_future_dated(start) && e.trust.is_trusted())
                .collect();
            metrics.seed_from_repository(&entries);
            for j in jobs {
                for t in &j.targets {
                    let Some(last) = last_run(j.kind, t, &entries) else {
                        continue;
                    };
                    if j.schedule.missed(last, start) {
                        tracing::info!(
                            "job `{}`: {} of `{t}` is overdue (last run: {}); running it now",
                            j.name,
                            j.kind,
                            last.map(|l| l.to_rfc3339())
                                .unwrap_or_else(|| "never".into())
                        );
                        dispatch(shared, tasks, j, t);
                    }
                }
            }
        }
        Err(e) => tracing::warn!(
            "cannot list the repository to catch up missed runs (they run at their next time): {e}"
        ),
    }
}

/// Dispatch each job at its times until the shutdown.
async fn schedule(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    jobs: &[Arc<Job>],
    start: DateTime<Utc>,
) {
    let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(jobs.len());
    for j in jobs {
        let n = j.schedule.next_after(start).ok();
        log_next(j, n);
        next.push(n);
    }

    loop {
        let now = Utc::now();
        for (j, n) in jobs.iter().zip(next.iter_mut()) {
            if n.is_some_and(|t| t <= now) {
                for t in &j.targets {
                    dispatch(shared, tasks, j, t);
                }
                *n = j.schedule.next_after(now).ok();
                log_next(j, *n);
            }
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                shared.failures.fetch_add(1, Ordering::SeqCst);
                tracing::error!("a job run ended abnormally: {e}");
            }
        }
        let wake = next.iter().flatten().min().copied();
        let nap = wake
            .and_then(|w| (w - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        let nap = if wake.is_none() { MAX_SLEEP } else { nap };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = shared.shutdown.cancelled() => break,
        }
    }
}

/// Let the running runs finish within `grace`, then cancel them; true when cancelled.
async fn drain(shared: &Shared, tasks: &mut JoinSet<()>, grace: Duration) -> bool {
    // Queued runs never start now (each says so as it ends); only runs holding a slot are
    // waited for.
    let running = shared.running_now();
    let busy = running.len();
    let mut cancelled = false;
    if busy > 0 {
        tracing::warn!(
            "stopping: no new jobs start; waiting up to {}s for {busy} running job(s) to finish: {}",
            grace.as_secs(),
            running
                .iter()
                .map(|(j, t)| format!("`{j}` for `{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown grace period of {}s is over: cancelling the running job(s)",
                grace.as_secs()
            );
            shared.ctx.cancel.cancel();
            cancelled = true;
            while tasks.join_next().await.is_some() {}
        }
    } else {
        tracing::info!("stopping: no job is running");
        // Queued runs end as soon as they see the shutdown.
        while tasks.join_next().await.is_some() {}
    }
    cancelled
}

fn log_next(j: &Job, next: Option<DateTime<Utc>>) {
    match next {
        Some(n) => tracing::info!(
            "job `{}` ({} of {}): next run {} ({})",
            j.name,
            j.kind,
            j.targets.join(", "),
            n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            n.with_timezone(&j.schedule.timezone())
                .format("%Y-%m-%d %H:%M:%S %Z")
        ),
        None => tracing::warn!(
            "job `{}`: `{}` has no next run; it will not run again",
            j.name,
            j.schedule.expression()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_runs_per_kind() {
        assert_eq!(last_run(JobKind::Backup, "app", &[]), Some(None));
        assert_eq!(last_run(JobKind::BaseBackup, "app", &[]), Some(None));
        assert_eq!(last_run(JobKind::Verify, "app", &[]), None);
        // Regression: a drill of a target without a base backup cannot run; catching it up
        // at the daemon's first start failed the job (an alert on every new deployment).
        assert_eq!(last_run(JobKind::Drill, "app", &[]), None);
        assert_eq!(last_run(JobKind::Prune, "app", &[]), None);
    }
}
