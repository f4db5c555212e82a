//! One run per target at a time, across processes and hosts: a lock object created with a
//! conditional write (`If-None-Match: *` on S3, an exclusive link on a directory), refreshed
//! by a heartbeat, and taken over once it has expired (its holder crashed).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dr_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Error, Kind, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockBody {
    pub target: String,
    pub holder: String,
    pub operation: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Unique per acquisition: tells our lock from a successor's.
    pub token: String,
}

/// A held lock; release it with [`RunLock::release`] (dropping stops the heartbeat only).
pub struct RunLock {
    store: Arc<dyn ObjectStore>,
    key: String,
    token: String,
    stop: CancellationToken,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

fn holder() -> String {
    format!("{} pid {}", crate::host::host_name(), std::process::id())
}

fn body(
    target: &str,
    operation: &str,
    token: &str,
    ttl: Duration,
    acquired: DateTime<Utc>,
) -> LockBody {
    LockBody {
        target: target.to_string(),
        holder: holder(),
        operation: operation.to_string(),
        acquired_at: acquired,
        expires_at: Utc::now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15)),
        token: token.to_string(),
    }
}

impl RunLock {
    /// Take the lock for `target`, waiting up to `wait` for a live holder to finish.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        target: &str,
        operation: &str,
        ttl: Duration,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<RunLock> {
        let key = dr_catalog::keys::lock(target);
        let token = format!(
            "{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let acquired = Utc::now();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let b = body(target, operation, &token, ttl, acquired);
            let json = serde_json::to_vec_pretty(&b)
                .map_err(|e| Error::new(Kind::Failed, e.to_string()))?;
            if store.put_if_absent(&key, Bytes::from(json)).await? {
                let stop = CancellationToken::new();
                let heartbeat = tokio::spawn(heartbeat(
                    Arc::clone(&store),
                    key.clone(),
                    b,
                    ttl,
                    stop.clone(),
                ));
                return Ok(RunLock {
                    store,
                    key,
                    token,
                    stop,
                    heartbeat: Some(heartbeat),
                });
            }
            // Held: by whom, and is it still alive?
            let held: Option<LockBody> = match store.get(&key).await {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(dr_store::StoreError::NotFound { .. }) => continue, // released meanwhile
                Err(e) => return Err(e.into()),
            };
            // Our own lock: a create whose response was lost and was retried.
            if let Some(h) = held.as_ref().filter(|h| h.token == token) {
                let stop = CancellationToken::new();
                let heartbeat = tokio::spawn(heartbeat(
                    Arc::clone(&store),
                    key.clone(),
                    h.clone(),
                    ttl,
                    stop.clone(),
                ));
                return Ok(RunLock {
                    store,
                    key,
                    token,
                    stop,
                    heartbeat: Some(heartbeat),
                });
            }
            match held {
                Some(h) if h.expires_at > Utc::now() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::new(
                            Kind::Locked,
                            format!(
                                "target `{target}` is locked by {} ({} since {}, lock expires {})\nhint: another dr run is working on this target; wait for it, or raise lock.wait_secs. If that process is gone, the lock expires by itself at the time shown",
                                h.holder,
                                h.operation,
                                h.acquired_at.to_rfc3339(),
                                h.expires_at.to_rfc3339()
                            ),
                        ));
                    }
                    tracing::info!(holder = %h.holder, "target `{target}` is locked; waiting");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = cancel.cancelled() => return Err(Error::interrupted("waiting for the lock")),
                    }
                }
                stale => {
                    // Expired or unreadable: the holder died. Take it over, but only if it is
                    // still the same stale lock we looked at.
                    let again: Option<LockBody> = match store.get(&key).await {
                        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                        Err(_) => None,
                    };
                    if again == stale {
                        tracing::warn!(
                            "taking over the expired lock of target `{target}` (held by {})",
                            stale
                                .as_ref()
                                .map(|s| s.holder.as_str())
                                .unwrap_or("unknown")
                        );
                        store.delete(&key).await?;
                    }
                }
            }
        }
    }

    /// Is the lock still ours? Checked right before a commit: a run whose lock expired and
    /// was taken over must not commit alongside its successor.
    pub async fn check(&self) -> Result<()> {
        let current: Option<LockBody> = match self.store.get(&self.key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(dr_store::StoreError::NotFound { .. }) => None,
            Err(e) => return Err(Error::from(e).context("re-reading the run lock")),
        };
        match current {
            Some(b) if b.token == self.token => Ok(()),
            Some(b) => Err(Error::new(
                Kind::Locked,
                format!(
                    "the run lock {} was taken over by {} while this run worked; nothing was committed\nhint: raise lock.ttl_secs if runs are slower than the lock's expiry",
                    self.key, b.holder
                ),
            )),
            None => Err(Error::new(
                Kind::Locked,
                format!("the run lock {} disappeared while this run worked; nothing was committed", self.key),
            )),
        }
    }

    /// Stop the heartbeat and delete the lock if it is still ours.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.await;
        }
        if let Ok(bytes) = self.store.get(&self.key).await {
            if let Ok(b) = serde_json::from_slice::<LockBody>(&bytes) {
                if b.token == self.token {
                    if let Err(e) = self.store.delete(&self.key).await {
                        tracing::warn!("could not release lock {}: {e}", self.key);
                    }
                }
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn heartbeat(
    store: Arc<dyn ObjectStore>,
    key: String,
    mut b: LockBody,
    ttl: Duration,
    stop: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        // Only refresh our own lock: if it was taken over, say so loudly.
        match store.get(&key).await {
            Ok(bytes) => match serde_json::from_slice::<LockBody>(&bytes) {
                Ok(cur) if cur.token == b.token => {}
                _ => {
                    tracing::error!("lock {key} was taken over by another run; this run's result may overlap with it");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!("lock heartbeat could not read {key}: {e}");
                continue;
            }
        }
        b.expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15));
        if let Ok(json) = serde_json::to_vec_pretty(&b) {
            if let Err(e) = store.put(&key, Bytes::from(json)).await {
                tracing::warn!("lock heartbeat could not refresh {key}: {e}");
            }
        }
    }
}
