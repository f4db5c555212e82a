//! Reporting: runs a backup, verify, prune or copy with pings, webhooks and metrics around it,
//! for `dr daemon` and the one-shot commands alike. It pings `/start`, runs the operation,
//! records [`crate::metrics`], writes the node-exporter textfile when configured, then sends
//! the webhook and the success or `/fail` ping ([`crate::notify`] delivers them). Nothing
//! below this module knows it exists.
//!
//! ```no_run
//! # async fn demo(ctx: dr_core::Context) -> Result<(), dr_core::Error> {
//! let reporter = dr_observe::report::Reporter::from_config(&ctx.config)?;
//! let target = &ctx.config.targets[0];
//! let manifest = reporter.backup(&ctx, target).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dr_catalog::Manifest;
use dr_config::{Config, JobKind, TargetConfig};

use crate::metrics::{Metrics, Sample};
use crate::notify::{JobEvent, Notifier};
use dr_core::copy::{CopyOptions, CopyReport};
use dr_core::host::host_name;
use dr_core::prune::TargetPrune;
use dr_core::verify::{VerifyOptions, VerifyReport};
use dr_core::{Context, Kind, Result};
use tokio_util::sync::CancellationToken;

/// How often a job is tried again after a transient failure ([`dr_core::Error::retryable`]),
/// and how long to wait before the first retry (doubled each time). The daemon's: one-shot
/// commands fail at once and leave retrying to whoever runs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub backoff: Duration,
}

impl RetryPolicy {
    /// As dr's one policy: `retries + 1` tries, the wait doubled each time without a cap.
    pub fn policy(&self) -> dr_retry::Policy {
        dr_retry::Policy::new(self.retries.saturating_add(1), self.backoff, Duration::MAX)
    }
}

/// How one run ended, for [`Reporter::finish`].
struct Finished {
    target: String,
    job: JobKind,
    backup_id: Option<String>,
    error: Option<dr_core::Error>,
    started_at: DateTime<Utc>,
    clock: Instant,
    backup_bytes: Option<u64>,
    verification_passed: Option<bool>,
    /// Record the metrics under these targets instead of `target` (a prune of every target:
    /// the pings and the webhook say `all`, the metrics never do).
    metric_targets: Option<Vec<String>>,
}

/// Runs operations with pings, webhooks and metrics around them. Used by `dr daemon` and by
/// one-shot `dr backup`/`verify`/`prune`; with nothing configured it only keeps metrics in
/// memory.
pub struct Reporter {
    notifier: Option<Notifier>,
    metrics: Arc<Metrics>,
    textfile: Option<PathBuf>,
    host: String,
    retry: RetryPolicy,
}

impl Reporter {
    /// Reads `[notify]`; the metrics start from the textfile when there is one, so counters
    /// carry on across one-shot runs.
    pub fn from_config(config: &Config) -> Result<Reporter> {
        let metrics = Arc::new(Metrics::default());
        let textfile = config.notify.textfile_path.clone();
        if let Some(p) = &textfile {
            match std::fs::read_to_string(p) {
                Ok(text) => metrics.load_text(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot read metrics textfile {}: {e}", p.display()),
            }
        }
        Ok(Reporter {
            notifier: Notifier::from_config(config)?,
            metrics,
            textfile,
            host: host_name(),
            retry: RetryPolicy::default(),
        })
    }

    /// Retry transient failures of the jobs this reporter runs.
    pub fn with_retries(mut self, policy: RetryPolicy) -> Reporter {
        self.retry = policy;
        self
    }

    /// Run `op` until it succeeds, fails for good, or the retries are spent. Only
    /// [`dr_core::Error::retryable`] failures are tried again, never after a signal.
    async fn attempt<T, F, Fut>(&self, cancel: &CancellationToken, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.retry
            .policy()
            .run(what, Some(cancel), |e: &dr_core::Error| e.retryable, op)
            .await
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    #[cfg(test)]
    fn with_notifier(mut self, n: Notifier) -> Reporter {
        self.notifier = Some(n);
        self
    }

    async fn start(&self, target: &str, job: JobKind) -> (DateTime<Utc>, Instant) {
        if let Some(n) = &self.notifier {
            n.started(target, job.as_str()).await;
        }
        (Utc::now(), Instant::now())
    }

    async fn finish(&self, f: Finished) -> JobEvent {
        let duration = f.clock.elapsed().as_secs_f64();
        let finished_at = Utc::now();
        let ok = f.error.is_none();
        let metric_targets = f
            .metric_targets
            .clone()
            .unwrap_or_else(|| vec![f.target.clone()]);
        for target in metric_targets {
            self.metrics.record(&Sample {
                target,
                operation: f.job.as_str().to_string(),
                ok,
                finished_at,
                duration_seconds: duration,
                backup_bytes: f.backup_bytes,
                verification_passed: f.verification_passed,
            });
        }
        if let Some(p) = &self.textfile {
            if let Err(e) = self.metrics.write_textfile(p) {
                tracing::warn!("cannot write metrics textfile {}: {e}", p.display());
            }
        }
        let event = JobEvent::new(
            f.target,
            f.job.as_str().to_string(),
            f.backup_id,
            f.error.as_ref(),
            (duration * 1000.0).round() / 1000.0,
            self.host.clone(),
            f.started_at,
            finished_at,
        );
        if let Some(n) = &self.notifier {
            n.finished(&event).await;
        }
        event
    }

    /// [`dr_core::backup::run`], reported.
    pub async fn backup(&self, ctx: &Context, target: &TargetConfig) -> Result<Manifest> {
        self.backup_as(ctx, target, JobKind::Backup).await
    }

    /// [`dr_core::backup::run_physical`], reported.
    pub async fn base_backup(&self, ctx: &Context, target: &TargetConfig) -> Result<Manifest> {
        self.backup_as(ctx, target, JobKind::BaseBackup).await
    }

    async fn backup_as(
        &self,
        ctx: &Context,
        target: &TargetConfig,
        job: JobKind,
    ) -> Result<Manifest> {
        let (started_at, clock) = self.start(&target.name, job).await;
        let physical = job == JobKind::BaseBackup;
        let what = format!(
            "{} of `{}`",
            if physical { "base backup" } else { "backup" },
            target.name
        );
        let result = self
            .attempt(&ctx.cancel, &what, || async move {
                if physical {
                    dr_core::backup::run_physical(ctx, target).await
                } else {
                    dr_core::backup::run(ctx, target).await
                }
            })
            .await;
        let (backup_id, backup_bytes, error) = match &result {
            Ok(m) => (Some(m.id.to_string()), Some(m.stored_bytes()), None),
            Err(e) => (None, None, Some(e.clone())),
        };
        self.finish(Finished {
            target: target.name.clone(),
            job,
            backup_id,
            error,
            started_at,
            clock,
            backup_bytes,
            verification_passed: None,
            metric_targets: None,
        })
        .await;
        result
    }

    /// [`dr_core::verify::run`], reported.
    pub async fn verify(&self, ctx: &Context, opts: &VerifyOptions) -> Result<VerifyReport> {
        let planned = opts
            .target
            .clone()
            .or_else(|| match ctx.config.targets.as_slice() {
                [only] => Some(only.name.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "all".into());
        let job = match opts.pitr {
            Some(_) => JobKind::Drill,
            None => JobKind::Verify,
        };
        let (started_at, clock) = self.start(&planned, job).await;
        let what = format!("verification of `{planned}`");
        let result = self
            .attempt(&ctx.cancel, &what, || dr_core::verify::run(ctx, opts))
            .await;
        let (target, backup_id, passed, error) = match &result {
            Ok(r) => (
                r.record.target.clone(),
                Some(r.record.backup_id.to_string()),
                Some(r.record.passed()),
                None,
            ),
            Err(e) => (
                planned,
                None,
                (e.kind == Kind::VerificationFailed).then_some(false),
                Some(e.clone()),
            ),
        };
        self.finish(Finished {
            target,
            job,
            backup_id,
            error,
            started_at,
            clock,
            backup_bytes: None,
            verification_passed: passed,
            metric_targets: None,
        })
        .await;
        result
    }

    /// [`dr_core::prune::run`] (not a dry run), reported. `force` also deletes damaged backups.
    /// `dr copy` into copy `name` (`to` is its context), reported as the operation `copy`:
    /// a run that left untrusted backups behind fails (after copying the others).
    pub async fn copy(
        &self,
        ctx: &Context,
        to: &Context,
        name: &str,
        opts: &CopyOptions,
    ) -> Result<CopyReport> {
        let planned = opts.target.clone().unwrap_or_else(|| "all".into());
        let (started_at, clock) = self.start(&planned, JobKind::Copy).await;
        let what = format!("copy of `{planned}` to `{name}`");
        let result = self
            .attempt(&ctx.cancel, &what, || {
                dr_core::copy::run(ctx, to, name, opts)
            })
            .await;
        let error = match &result {
            Ok(report) => dr_core::copy::refused_error(report),
            Err(e) => Some(e.clone()),
        };
        let metric_targets = opts
            .target
            .is_none()
            .then(|| ctx.config.targets.iter().map(|t| t.name.clone()).collect());
        self.finish(Finished {
            target: planned,
            job: JobKind::Copy,
            backup_id: None,
            error,
            started_at,
            clock,
            backup_bytes: None,
            verification_passed: None,
            metric_targets,
        })
        .await;
        result
    }

    pub async fn prune(
        &self,
        ctx: &Context,
        target: Option<&str>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<TargetPrune>> {
        let name = target.unwrap_or("all").to_string();
        let (started_at, clock) = self.start(&name, JobKind::Prune).await;
        let what = format!("prune of `{name}`");
        let result = self
            .attempt(&ctx.cancel, &what, || {
                dr_core::prune::run(ctx, target, false, force, now)
            })
            .await;
        // Without a target: one series per configured target and per target pruned (the
        // repository may hold targets no longer configured), never `target="all"`.
        let metric_targets = target.is_none().then(|| {
            let mut names: std::collections::BTreeSet<String> =
                ctx.config.targets.iter().map(|t| t.name.clone()).collect();
            if let Ok(pruned) = &result {
                names.extend(pruned.iter().map(|p| p.target.clone()));
            }
            names.into_iter().collect()
        });
        self.finish(Finished {
            target: name,
            job: JobKind::Prune,
            backup_id: None,
            error: result.as_ref().err().cloned(),
            started_at,
            clock,
            backup_bytes: None,
            verification_passed: None,
            metric_targets,
        })
        .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_support::{config, receiver};

    #[tokio::test]
    async fn reporter_records_metrics_and_textfile() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("dr.prom");
        let c = config(&format!(
            "[notify]\ntextfile_path = \"{}\"\n",
            path.display()
        ));
        let (base, _seen) = receiver(200);
        let r = Reporter::from_config(&c).expect("reporter");
        let r = r.with_notifier(
            Notifier::from_config(&config(&format!("[notify]\nping_url = \"{base}\"\n")))
                .expect("ok")
                .expect("some"),
        );
        let (started_at, clock) = r.start("app", JobKind::Backup).await;
        r.finish(Finished {
            target: "app".into(),
            job: JobKind::Backup,
            backup_id: None,
            error: Some(dr_core::Error::new(Kind::Failed, "boom")),
            started_at,
            clock,
            backup_bytes: None,
            verification_passed: None,
            metric_targets: None,
        })
        .await;
        let text = std::fs::read_to_string(&path).expect("textfile");
        assert!(
            text.contains("dr_failures_total{target=\"app\",operation=\"backup\"} 1"),
            "{text}"
        );
        // A second process carries the counter on.
        let r2 = Reporter::from_config(&c).expect("reporter");
        let (started_at, clock) = r2.start("app", JobKind::Backup).await;
        r2.finish(Finished {
            target: "app".into(),
            job: JobKind::Backup,
            backup_id: Some("20261122T030000Z".into()),
            error: None,
            started_at,
            clock,
            backup_bytes: Some(1234),
            verification_passed: None,
            metric_targets: None,
        })
        .await;
        let text = std::fs::read_to_string(&path).expect("textfile");
        assert!(
            text.contains("dr_failures_total{target=\"app\",operation=\"backup\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dr_last_backup_bytes{target=\"app\"} 1234"),
            "{text}"
        );
        assert!(text
            .contains("dr_last_success_timestamp_seconds{target=\"app\",operation=\"backup\"} "));
    }

    #[tokio::test]
    async fn only_transient_failures_are_tried_again() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let r = Reporter::from_config(&config(""))
            .expect("reporter")
            .with_retries(RetryPolicy {
                retries: 2,
                backoff: Duration::from_millis(1),
            });
        let cancel = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let flaky = || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(dr_core::Error::new(Kind::Unavailable, "connection reset").retryable(true))
            } else {
                Ok(7)
            }
        };
        assert_eq!(
            r.attempt(&cancel, "flaky", flaky)
                .await
                .expect("second try"),
            7
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        calls.store(0, Ordering::SeqCst);
        let bad = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(dr_core::Error::new(Kind::Integrity, "digest mismatch"))
        };
        assert!(r.attempt(&cancel, "bad", bad).await.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "an integrity failure is never retried"
        );

        calls.store(0, Ordering::SeqCst);
        let down = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(dr_core::Error::new(Kind::Unavailable, "timed out").retryable(true))
        };
        assert!(r.attempt(&cancel, "down", down).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "1 try + 2 retries");
    }
}
