//! `dr wal stream` inside the daemon: one stream per target with `mode = "stream"`, for as
//! long as the daemon runs (a sidecar beside the server needs nothing else). A stream that
//! cannot start (the server away, another stream holding the target's lock) is logged and
//! tried again a minute later; it stops with the daemon, after its last upload.

use std::sync::Arc;
use std::time::Duration;

use dr_config::WalMode;
use dr_core::Context;
use tokio_util::sync::CancellationToken;

/// The wait before a stream that ended with an error is started again.
const AGAIN: Duration = Duration::from_secs(60);

/// The targets the daemon streams.
pub fn targets(ctx: &Context) -> Vec<String> {
    ctx.config
        .targets
        .iter()
        .filter(|t| t.wal.as_ref().is_some_and(|w| w.mode() == WalMode::Stream))
        .map(|t| t.name.clone())
        .collect()
}

/// Stream `target` until `stop`.
pub async fn keep(ctx: Arc<Context>, target: String, stop: CancellationToken) {
    loop {
        let Some(t) = ctx.config.targets.iter().find(|t| t.name == target) else {
            return;
        };
        match dr_core::wal::stream::run(&ctx, t, &stop).await {
            Ok(done) => {
                tracing::info!(
                    "stopped streaming `{target}`: {} segments, {} partial uploads",
                    done.segments,
                    done.partials
                );
            }
            Err(e) => tracing::error!(
                "the WAL stream of `{target}` stopped: {}; starting it again in {} s",
                e.summary(),
                AGAIN.as_secs()
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(AGAIN) => {}
            () = stop.cancelled() => return,
        }
    }
}
