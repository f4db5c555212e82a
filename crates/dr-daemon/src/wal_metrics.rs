//! The WAL series of `/metrics` (`dr_wal_*`, [`dr_observe::metrics`]): every minute, the WAL
//! of each target with `[targets.wal]` as `dr status` assesses it. Nothing to do (and no
//! task) without such targets.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dr_core::Context;
use dr_observe::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// How often the WAL is assessed: the RPO gauge is this fresh; the lag alert uses the
/// archived time, which does not age with it.
pub const EVERY: Duration = Duration::from_secs(60);

/// Assess now and every [`EVERY`] until `stop`. A target whose archive cannot be read is
/// logged once until it can again; its series keep their last values.
pub async fn keep(ctx: &Context, metrics: Arc<Metrics>, stop: CancellationToken) {
    if !ctx.config.targets.iter().any(|t| t.wal.is_some()) {
        return;
    }
    let mut failing = std::collections::BTreeSet::new();
    loop {
        for (target, result) in dr_core::status::wal::all(ctx, Utc::now()).await {
            match result {
                Ok((status, _)) => {
                    metrics.record_wal(&target, &status);
                    failing.remove(&target);
                }
                Err(e) => {
                    if failing.insert(target.clone()) {
                        tracing::warn!(
                            "cannot assess the WAL archive of target {target} for the metrics: {}",
                            e.summary()
                        );
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => break,
        }
    }
}
