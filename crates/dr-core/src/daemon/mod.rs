//! `dr daemon`: run the jobs of `schedules/*.toml` and `[[schedules]]` on their cron
//! expressions.
//!
//! - **Timing.** The daemon sleeps until the earliest next run, at most 30 s at a time, and
//!   re-reads the wall clock after every sleep: a clock that jumps forward runs each job whose
//!   time was skipped once (not once per skipped occurrence); a clock that jumps back delays
//!   nothing already planned.
//! - **No overlap.** A job's run for a target is skipped (and logged) while its previous run for
//!   that target is still queued or running. Across processes and hosts the repository lock
//!   ([`crate::lock`]) keeps backups and prunes of one target apart; a daemon's run takes over
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
//! - **Heartbeat.** `daemon/{host}.json` in the repository is rewritten every minute and
//!   removed on a clean stop ([`crate::heartbeat`]); `dr status` reads it.
//! - **Alerts and metrics** come from [`Reporter`]; `/metrics` is served on
//!   `daemon.metrics_address`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_config::JobKind;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use tokio_util::sync::CancellationToken;

pub mod jobs;
pub use jobs::{load_jobs, preflight, verify_jobs_without_identity, Job};

use crate::report::Reporter;
use crate::verify::VerifyOptions;
use crate::{Context, Error, Kind, Result};

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

struct Shared {
    ctx: Arc<Context>,
    reporter: Arc<Reporter>,
    semaphore: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// (job, target) runs started and not finished: waiting for a slot, or running.
    running: Mutex<BTreeMap<(String, String), RunState>>,
    runs: AtomicU64,
    failures: AtomicU64,
    interrupted: AtomicBool,
}

/// The time of the last run of `kind` for `target`, from the repository listing; `None`
/// inside `Some` means "never"; an outer `None` means "not applicable: do not catch up".
fn last_run(
    kind: JobKind,
    target: &str,
    entries: &[crate::repo::BackupEntry],
) -> Option<Option<DateTime<Utc>>> {
    // A server target's runs are those of its databases.
    let mine = entries
        .iter()
        .filter(|e| dr_catalog::members::belongs_to(&e.manifest.target, target));
    match kind {
        JobKind::Backup => Some(mine.map(|e| e.manifest.started_at).max()),
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
        JobKind::Prune => None,
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
    let mut server = None;
    if let Some(addr) = &daemon.metrics_address {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|e| {
                Error::new(
                    Kind::Unavailable,
                    format!("cannot listen on daemon.metrics_address {addr}: {e}\nhint: pick a free port, or remove metrics_address"),
                )
            })?;
        tracing::info!("serving Prometheus metrics at http://{addr}/metrics");
        server = Some(tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&metrics),
            server_stop.clone(),
        )));
    }
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
            crate::heartbeat::keep(&ctx, targets.into_iter().collect(), stop).await;
        })
    };

    // Missed runs, and metrics from what the repository already holds.
    let start = Utc::now();
    match crate::repo::list(ctx.store.as_ref(), None, &ctx.signing).await {
        Ok(entries) => {
            // A future-dated backup (clock skew) says nothing about when a backup last ran:
            // counting it would suppress catch-up runs and freshness alerts until its date.
            // Nor does an untrusted one (a forgery must not suppress the next real backup).
            let entries: Vec<crate::repo::BackupEntry> = entries
                .into_iter()
                .filter(|e| !e.manifest.id.is_future_dated(start) && e.trust.is_trusted())
                .collect();
            metrics.seed_from_repository(&entries);
            for j in &jobs {
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
                        dispatch(&shared, &mut tasks, j, t);
                    }
                }
            }
        }
        Err(e) => tracing::warn!(
            "cannot list the repository to catch up missed runs (they run at their next time): {e}"
        ),
    }

    let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let n = j.schedule.next_after(start).ok();
        log_next(j, n);
        next.push(n);
    }

    loop {
        let now = Utc::now();
        for (j, n) in jobs.iter().zip(next.iter_mut()) {
            if n.is_some_and(|t| t <= now) {
                for t in &j.targets {
                    dispatch(&shared, &mut tasks, j, t);
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
            _ = shutdown.cancelled() => break,
        }
    }

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
            ctx.cancel.cancel();
            cancelled = true;
            while tasks.join_next().await.is_some() {}
        }
    } else {
        tracing::info!("stopping: no job is running");
        // Queued runs end as soon as they see the shutdown.
        while tasks.join_next().await.is_some() {}
    }
    server_stop.cancel();
    beat_stop.cancel();
    let _ = beat.await;
    if let Some(s) = server {
        let _ = s.await;
    }
    Ok(Outcome {
        runs: shared.runs.load(Ordering::SeqCst),
        failures: shared.failures.load(Ordering::SeqCst),
        cancelled: cancelled || shared.interrupted.load(Ordering::SeqCst),
    })
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

/// Where a (job, target) run stands between dispatch and its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// Waiting for one of the `daemon.max_concurrent_jobs` run slots.
    Queued,
    Running,
}

impl Shared {
    fn set(&self, key: &(String, String), state: RunState) {
        let mut runs = self.running.lock().unwrap_or_else(|p| p.into_inner());
        runs.insert(key.clone(), state);
    }

    /// The runs holding a slot, as (job, target).
    fn running_now(&self) -> Vec<(String, String)> {
        let runs = self.running.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter()
            .filter(|(_, s)| **s == RunState::Running)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Start one run of `job` for `target` (queued while every run slot is busy), unless its
/// previous one is still queued or running.
fn dispatch(shared: &Arc<Shared>, tasks: &mut JoinSet<()>, job: &Arc<Job>, target: &str) {
    let key = (job.name.clone(), target.to_string());
    {
        let mut runs = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        match runs.get(&key) {
            Some(RunState::Running) => {
                tracing::info!(
                    "job `{}`: the previous {} of `{target}` is still running; skipping this run",
                    job.name,
                    job.kind
                );
                return;
            }
            Some(RunState::Queued) => {
                tracing::info!(
                    "job `{}`: {} of `{target}` is still queued for a run slot; not queueing it twice",
                    job.name,
                    job.kind
                );
                return;
            }
            None => {}
        }
        runs.insert(key.clone(), RunState::Queued);
        if shared.semaphore.available_permits() == 0 {
            tracing::info!(
                "job `{}`: {} of `{target}` queued: every run slot is busy (daemon.max_concurrent_jobs = {})",
                job.name,
                job.kind,
                shared.ctx.config.daemon.max_concurrent_jobs.max(1)
            );
        }
    }
    let shared = Arc::clone(shared);
    let job = Arc::clone(job);
    tasks.spawn(async move {
        // Cleared however the run ends, a panic included, so the job is never stuck.
        let _running = Running {
            shared: Arc::clone(&shared),
            key: key.clone(),
        };
        let permit = tokio::select! {
            p = Arc::clone(&shared.semaphore).acquire_owned() => p.ok(),
            _ = shared.shutdown.cancelled() => None,
        };
        if let Some(_permit) = permit.filter(|_| !shared.shutdown.is_cancelled()) {
            shared.set(&key, RunState::Running);
            run_target(&shared, &job, &key.1).await;
        } else {
            tracing::warn!(
                "stopping: job `{}` for `{}` was queued for a run slot and is dropped",
                key.0,
                key.1
            );
        }
    });
}

/// Marks (job, target) as running while alive.
struct Running {
    shared: Arc<Shared>,
    key: (String, String),
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
    }
}

async fn run_target(shared: &Shared, job: &Job, target: &str) {
    let ctx = shared.ctx.as_ref();
    let Some(t) = ctx.config.targets.iter().find(|t| t.name == target) else {
        tracing::error!("job `{}`: target `{target}` is not configured", job.name);
        return;
    };
    if !t.is_server() || job.kind == JobKind::Prune {
        // Prune knows a server target: each of its databases in the repository.
        return run_one(shared, job, target, t).await;
    }
    // Every database of a server, one after the other in this run's slot: the ones it has
    // now (backup), the ones the repository holds (verify).
    let members = match job.kind {
        JobKind::Backup => crate::backup::expand(t).await,
        _ => crate::repo::members(ctx, target).await.map(|names| {
            names
                .iter()
                .filter_map(|n| ctx.config.database_target(n).ok().flatten())
                .collect()
        }),
    };
    match members {
        Ok(members) => {
            for m in &members {
                if ctx.cancel.is_cancelled() {
                    break;
                }
                run_one(shared, job, &m.name, m).await;
            }
        }
        Err(e) => {
            shared.runs.fetch_add(1, Ordering::SeqCst);
            shared.failures.fetch_add(1, Ordering::SeqCst);
            tracing::error!(
                "job `{}`: {} of `{target}` failed: {}",
                job.name,
                job.kind,
                e
            );
        }
    }
}

/// One run of `job` for one target (`t` is its configuration; for a database of a server
/// target, the expanded one).
async fn run_one(shared: &Shared, job: &Job, target: &str, t: &dr_config::TargetConfig) {
    let ctx = shared.ctx.as_ref();
    let r = &shared.reporter;
    tracing::info!("job `{}`: {} of `{target}` starting", job.name, job.kind);
    let result: Result<String> = match job.kind {
        JobKind::Backup => match r.backup(ctx, t).await {
            Ok(m) => {
                let mut msg = format!(
                    "backup {} complete, {} stored",
                    m.id,
                    crate::human_bytes(m.stored_bytes())
                );
                if job.prune_after && !ctx.cancel.is_cancelled() {
                    match r.prune(ctx, Some(target), false, Utc::now()).await {
                        Ok(reports) => {
                            let deleted: usize = reports
                                .iter()
                                .map(|p| p.decisions.iter().filter(|d| !d.keep).count())
                                .sum();
                            msg.push_str(&format!("; pruned {deleted} old backup(s)"));
                        }
                        Err(e) => {
                            shared.failures.fetch_add(1, Ordering::SeqCst);
                            tracing::error!(
                                "job `{}`: prune of `{target}` after its backup failed: {}",
                                job.name,
                                e
                            );
                        }
                    }
                }
                Ok(msg)
            }
            Err(e) => Err(e),
        },
        JobKind::Verify => {
            let opts = VerifyOptions {
                target: Some(target.to_string()),
                ..VerifyOptions::default()
            };
            r.verify(ctx, &opts).await.map(|rep| {
                format!(
                    "backup {} verified: {} checks passed",
                    rep.record.backup_id, rep.record.checks_total
                )
            })
        }
        JobKind::Prune => r
            .prune(ctx, Some(target), false, Utc::now())
            .await
            .map(|reports| {
                let deleted: usize = reports
                    .iter()
                    .map(|p| p.decisions.iter().filter(|d| !d.keep).count())
                    .sum();
                format!("pruned {deleted} backup(s)")
            }),
    };
    shared.runs.fetch_add(1, Ordering::SeqCst);
    match result {
        Ok(msg) => tracing::info!("job `{}`: {} of `{target}` ok: {msg}", job.name, job.kind),
        Err(e) => {
            if e.kind == Kind::Interrupted {
                shared.interrupted.store(true, Ordering::SeqCst);
            }
            shared.failures.fetch_add(1, Ordering::SeqCst);
            tracing::error!(
                "job `{}`: {} of `{target}` failed: {}",
                job.name,
                job.kind,
                e
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_runs_per_kind() {
        assert_eq!(last_run(JobKind::Backup, "app", &[]), Some(None));
        assert_eq!(last_run(JobKind::Verify, "app", &[]), None);
        assert_eq!(last_run(JobKind::Prune, "app", &[]), None);
    }
}
