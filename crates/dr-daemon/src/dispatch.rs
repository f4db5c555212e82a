//! Dispatch: one run of a job for a target at a time (skipped while the previous one is
//! queued or running), at most `daemon.max_concurrent_jobs` holding a slot, each reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use dr_config::JobKind;
use dr_core::verify::VerifyOptions;
use dr_core::{Context, Kind, Result};
use dr_observe::report::Reporter;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Job;

pub(crate) struct Shared {
    pub(crate) ctx: Arc<Context>,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) semaphore: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    /// (job, target) runs started and not finished: waiting for a slot, or running.
    pub(crate) running: Mutex<BTreeMap<(String, String), RunState>>,
    pub(crate) runs: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) interrupted: AtomicBool,
}

/// Where a (job, target) run stands between dispatch and its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
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
    pub(crate) fn running_now(&self) -> Vec<(String, String)> {
        let runs = self.running.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter()
            .filter(|(_, s)| **s == RunState::Running)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Start one run of `job` for `target` (queued while every run slot is busy), unless its
/// previous one is still queued or running.
pub(crate) fn dispatch(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    job: &Arc<Job>,
    target: &str,
) {
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
    if !t.is_server()
        || matches!(
            job.kind,
            JobKind::Prune | JobKind::BaseBackup | JobKind::Drill | JobKind::Copy
        )
    {
        // Prune knows a server target: each of its databases in the repository; a base
        // backup is of the whole cluster.
        return run_one(shared, job, target, t).await;
    }
    // Every database of a server, one after the other in this run's slot: the ones it has
    // now (backup), the ones the repository holds (verify).
    let members = match job.kind {
        JobKind::Backup => dr_core::backup::expand(t).await,
        _ => dr_core::repo::members(ctx, target).await.map(|names| {
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
    if !job.copies.is_empty() {
        // On copy repositories: `copy` copies to each; `verify` and `prune` run on each.
        for name in &job.copies {
            if ctx.cancel.is_cancelled() {
                break;
            }
            let result = on_copy(shared, job, target, name).await;
            finish(shared, job, &format!("{target}` on copy `{name}"), result);
        }
        return;
    }
    let result: Result<String> = match job.kind {
        JobKind::Copy => Ok("no copies configured".to_string()),
        JobKind::Backup | JobKind::BaseBackup => match backup(r, ctx, t, job.kind).await {
            Ok(m) => {
                let mut msg = format!(
                    "{} {} complete, {} stored",
                    job.kind,
                    m.id,
                    dr_core::human_bytes(m.stored_bytes())
                );
                if job.prune_after && !ctx.cancel.is_cancelled() {
                    match r.prune(ctx, Some(target), false, Utc::now()).await {
                        Ok(reports) => {
                            msg.push_str(&format!("; pruned {} old backup(s)", deleted(&reports)));
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
        JobKind::Drill => {
            let opts = VerifyOptions {
                target: Some(target.to_string()),
                pitr: Some(dr_core::verify::Drill::default()),
                ..VerifyOptions::default()
            };
            r.verify(ctx, &opts).await.map(|rep| {
                let point = rep.record.drill.as_ref().map_or("", |d| d.point.as_str());
                format!(
                    "base backup {} drilled to {point}: {} checks passed",
                    rep.record.backup_id, rep.record.checks_total
                )
            })
        }
        JobKind::Prune => r
            .prune(ctx, Some(target), false, Utc::now())
            .await
            .map(|reports| format!("pruned {} backup(s)", deleted(&reports))),
    };
    finish(shared, job, target, result);
}

/// Count and log one run's result.
fn finish(shared: &Shared, job: &Job, target: &str, result: Result<String>) {
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

/// One run of `job` for `target` on copy `name`: a copy to it, or a verify or prune of it.
async fn on_copy(shared: &Shared, job: &Job, target: &str, name: &str) -> Result<String> {
    let ctx = shared.ctx.as_ref();
    let mut copy_ctx = dr_core::Context::open(ctx.config.for_copy(name)?)
        .await?
        .with_cancel(ctx.cancel.clone());
    copy_ctx.scheduled = true;
    let r = &shared.reporter;
    match job.kind {
        JobKind::Copy => {
            let opts = dr_core::copy::CopyOptions {
                target: Some(target.to_string()),
                trust_unsigned: false,
                id: None,
            };
            let report = r.copy(ctx, &copy_ctx, name, &opts).await?;
            if let Some(e) = dr_core::copy::refused_error(&report) {
                return Err(e);
            }
            Ok(format!(
                "{} backup(s) copied, {} already there",
                report.copied.len(),
                report.present
            ))
        }
        JobKind::Verify => {
            let opts = VerifyOptions {
                target: Some(target.to_string()),
                ..VerifyOptions::default()
            };
            r.verify(&copy_ctx, &opts).await.map(|rep| {
                format!(
                    "backup {} verified: {} checks passed",
                    rep.record.backup_id, rep.record.checks_total
                )
            })
        }
        JobKind::Prune => r
            .prune(&copy_ctx, Some(target), false, Utc::now())
            .await
            .map(|reports| format!("pruned {} backup(s)", deleted(&reports))),
        // Refused with `copies` when the config is loaded.
        JobKind::Backup | JobKind::BaseBackup | JobKind::Drill => Ok(String::new()),
    }
}

/// A logical or a base backup, reported.
async fn backup(
    r: &dr_observe::report::Reporter,
    ctx: &dr_core::Context,
    t: &dr_config::TargetConfig,
    kind: JobKind,
) -> Result<dr_catalog::manifest::Manifest> {
    match kind {
        JobKind::BaseBackup => r.base_backup(ctx, t).await,
        _ => r.backup(ctx, t).await,
    }
}

/// How many backups a prune deleted, over its targets' reports.
fn deleted(reports: &[dr_core::prune::TargetPrune]) -> usize {
    reports
        .iter()
        .map(|p| p.decisions.iter().filter(|d| !d.keep).count())
        .sum()
}
