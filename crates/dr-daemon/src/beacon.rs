//! The writer of `dr daemon`'s beacon (its format: [`dr_catalog::beacon`]).

use chrono::Utc;
use dr_catalog::beacon::{Beacon, EVERY};
use dr_catalog::keys;
use tokio_util::sync::CancellationToken;

use dr_core::Context;

/// Write the beacon now and every [`EVERY`] until `stop`; then remove it. A failed write
/// is logged once (until one succeeds again): the jobs matter more than the beacon.
pub async fn keep(ctx: &Context, targets: Vec<String>, stop: CancellationToken) {
    let host = dr_core::host::host_name();
    let key = keys::daemon_beacon(&host);
    let mut beacon = Beacon {
        host,
        pid: std::process::id(),
        started_at: Utc::now(),
        last_beat: Utc::now(),
        targets,
    };
    let mut failing = false;
    loop {
        beacon.last_beat = Utc::now();
        let body = serde_json::to_vec_pretty(&beacon).unwrap_or_default();
        match ctx.store.put(&key, body.into()).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cannot write the daemon's beacon {key}: {e}; `dr status` will say no daemon is running");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => break,
        }
    }
    if let Err(e) = ctx.store.delete(&key).await {
        tracing::warn!("cannot remove the daemon's beacon {key}: {e}");
    }
}
