//! One run per target at a time, across processes and hosts: a lock object created with a
//! conditional write (`If-None-Match: *` on S3, an exclusive link on a directory), refreshed
//! by a refresh every ttl/3, and taken over once it has expired (its holder crashed).
//!
//! A holder that is provably gone is not waited for: the lock records its process (host,
//! pid, and on Linux the boot id, pid namespace and start time), and a run on the same host,
//! in the same pid namespace, that finds that process no longer running takes the lock over
//! at once (a `dr daemon` killed and restarted). Where that cannot be proven (another host, a
//! container restarted into a new pid namespace), a scheduled run ([`Context::scheduled`])
//! waits while the lock is not refreshed: a dead holder's lock expires and is taken over, a
//! live holder refreshes it within ttl/3 and the run gives up as before.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dr_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Context, Error, Kind, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockBody {
    pub target: String,
    pub holder: String,
    pub operation: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Unique per acquisition: tells our lock from a successor's.
    pub token: String,
    /// The holding process, for a successor on the same host to tell whether it still runs
    /// (absent in locks of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
}

/// A process as a successor on the same host can check it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    pub host: String,
    pub pid: u32,
    /// Linux: `/proc/sys/kernel/random/boot_id`, the pid namespace (`pid:[…]`) and the
    /// start time in clock ticks since boot, space-separated; `None` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Process {
    fn current() -> Process {
        let pid = std::process::id();
        Process {
            host: crate::host::host_name(),
            pid,
            instance: instance(pid),
        }
    }
}

/// `boot_id pidns starttime` of `pid` as this process sees it; `None` without /proc.
fn instance(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let (start, _) = proc_stat(pid)?;
    Some(format!(
        "{} {} {start}",
        boot.trim(),
        ns.to_string_lossy().replace(' ', "_")
    ))
}

/// (start time, state) of `pid` from `/proc/PID/stat`; `None` when there is no such process.
fn proc_stat(pid: u32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the
    // last ')'. Field 3 is the state, field 22 the start time.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The holder of `lock` is provably gone: it ran on this host, in this boot and pid
/// namespace, and no process with its pid and start time runs now (a zombie counts as gone).
/// `false` whenever that cannot be shown.
pub fn holder_gone(lock: &LockBody) -> bool {
    let Some(p) = &lock.process else {
        return false;
    };
    let Some(theirs) = &p.instance else {
        return false;
    };
    if p.host != crate::host::host_name() {
        return false;
    }
    let Some(mine) = instance(std::process::id()) else {
        return false;
    };
    let fields = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };
    let (theirs, mine) = (fields(theirs), fields(&mine));
    if theirs.len() != 3 || mine.len() != 3 || theirs[..2] != mine[..2] {
        return false;
    }
    match proc_stat(p.pid) {
        None => true,
        Some((_, 'Z' | 'X')) => true,
        Some((start, _)) => start.to_string() != theirs[2],
    }
}

/// A held lock; release it with [`RunLock::release`] (dropping stops the refresh only).
pub struct RunLock {
    store: Arc<dyn ObjectStore>,
    key: String,
    token: String,
    stop: CancellationToken,
    refresh: Option<tokio::task::JoinHandle<()>>,
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
        process: Some(Process::current()),
    }
}

impl RunLock {
    /// Take the lock for `target` for `operation` of `ctx`: `lock.ttl_secs`, `lock.wait_secs`,
    /// and for a scheduled run, waiting out a lock nobody refreshes (see the module docs).
    pub async fn acquire_for(ctx: &Context, target: &str, operation: &str) -> Result<RunLock> {
        RunLock::acquire(
            Arc::clone(&ctx.store),
            target,
            operation,
            Duration::from_secs(ctx.config.lock.ttl_secs),
            Duration::from_secs(ctx.config.lock.wait_secs),
            ctx.scheduled,
            &ctx.cancel,
        )
        .await
    }

    /// Take the lock for `target`, waiting up to `wait` for a live holder to finish; with
    /// `outlast_unrefreshed`, past `wait` also as long as the lock is not refreshed (until it
    /// expires and is taken over).
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        target: &str,
        operation: &str,
        ttl: Duration,
        wait: Duration,
        outlast_unrefreshed: bool,
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
        // Past the deadline: the lock as first seen then, waited out while it stays the same.
        let mut outlasting: Option<LockBody> = None;
        loop {
            let b = body(target, operation, &token, ttl, acquired);
            let json = serde_json::to_vec_pretty(&b)
                .map_err(|e| Error::new(Kind::Failed, e.to_string()))?;
            if store.put_if_absent(&key, Bytes::from(json)).await? {
                return Ok(RunLock::held(store, key, token, b, ttl));
            }
            // Held: by whom, and is it still alive?
            let held: Option<LockBody> = match store.get(&key).await {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(dr_store::StoreError::NotFound { .. }) => continue, // released meanwhile
                Err(e) => return Err(e.into()),
            };
            // Our own lock: a create whose response was lost and was retried.
            if let Some(h) = held.as_ref().filter(|h| h.token == token) {
                let h = h.clone();
                return Ok(RunLock::held(store, key, token, h, ttl));
            }
            match held {
                Some(h) if h.expires_at > Utc::now() && !holder_gone(&h) => {
                    let past_deadline = tokio::time::Instant::now() >= deadline;
                    let wait = Waiting {
                        target,
                        past_deadline,
                        outlast_unrefreshed,
                    };
                    let nap = wait.nap(&h, &mut outlasting)?;
                    if !dr_retry::sleep(nap, Some(cancel)).await {
                        return Err(Error::interrupted("waiting for the lock"));
                    }
                }
                stale => take_over(store.as_ref(), &key, target, stale).await?,
            }
        }
    }

    /// Ours: start the refresh that keeps `b` fresh.
    fn held(
        store: Arc<dyn ObjectStore>,
        key: String,
        token: String,
        b: LockBody,
        ttl: Duration,
    ) -> RunLock {
        let stop = CancellationToken::new();
        let refresh = tokio::spawn(refresh(
            Arc::clone(&store),
            key.clone(),
            b,
            ttl,
            stop.clone(),
        ));
        RunLock {
            store,
            key,
            token,
            stop,
            refresh: Some(refresh),
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
                    "the run lock {} was taken over by {} while this run worked; nothing was committed",
                    self.key, b.holder
                ),
            )
            .with_hint("raise lock.ttl_secs if runs are slower than the lock's expiry")),
            None => Err(Error::new(
                Kind::Locked,
                format!("the run lock {} disappeared while this run worked; nothing was committed", self.key),
            )),
        }
    }

    /// Stop the refresh and delete the lock if it is still ours.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(h) = self.refresh.take() {
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

/// A live holder's lock, looked at again: how long to wait, or why to give up.
struct Waiting<'a> {
    target: &'a str,
    past_deadline: bool,
    outlast_unrefreshed: bool,
}

impl Waiting<'_> {
    /// The wait before the next look at a lock `h` held by a live run, or the `Locked` error
    /// once `lock.wait_secs` is over and the lock is refreshed (or not to be outlasted).
    fn nap(&self, h: &LockBody, outlasting: &mut Option<LockBody>) -> Result<Duration> {
        let target = self.target;
        let unrefreshed = match outlasting {
            Some(first) => *first == *h,
            None if self.past_deadline && self.outlast_unrefreshed => {
                tracing::warn!(
                    "target `{target}` is locked by {} ({} since {}); if that run is gone its lock expires at {}: waiting as long as nobody refreshes it",
                    h.holder,
                    h.operation,
                    h.acquired_at.to_rfc3339(),
                    h.expires_at.to_rfc3339()
                );
                *outlasting = Some(h.clone());
                true
            }
            None => false,
        };
        if self.past_deadline && !unrefreshed {
            if outlasting.is_some() {
                tracing::info!(
                    "the lock of target `{target}` was refreshed: {} is alive and working on it",
                    h.holder
                );
            }
            return Err(Error::new(
                Kind::Locked,
                format!(
                    "target `{target}` is locked by {} ({} since {}, lock expires {})",
                    h.holder,
                    h.operation,
                    h.acquired_at.to_rfc3339(),
                    h.expires_at.to_rfc3339()
                ),
            )
            .with_hint("another dr run is working on this target; wait for it, or raise lock.wait_secs. If that process is gone, the lock expires by itself at the time shown"));
        }
        if outlasting.is_none() {
            tracing::info!(holder = %h.holder, "target `{target}` is locked; waiting");
        }
        // Outlasting: look again at the expiry, or at least every 10 s.
        Ok(match outlasting {
            Some(_) => (h.expires_at - Utc::now())
                .to_std()
                .unwrap_or_default()
                .clamp(Duration::from_millis(200), Duration::from_secs(10)),
            None => dr_retry::RUN_LOCK_POLL.backoff(1),
        })
    }
}

/// Expired or unreadable: the holder died. Take it over, but only if it is still the same
/// stale lock we looked at.
async fn take_over(
    store: &dyn ObjectStore,
    key: &str,
    target: &str,
    stale: Option<LockBody>,
) -> Result<()> {
    let again: Option<LockBody> = match store.get(key).await {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(_) => None,
    };
    if again == stale {
        let why = match &stale {
            Some(s) if s.expires_at > Utc::now() => "its holder is no longer running on this host",
            Some(_) => "it expired",
            None => "it is unreadable",
        };
        tracing::warn!(
            "taking over the lock of target `{target}` (held by {}): {why}",
            stale
                .as_ref()
                .map(|s| s.holder.as_str())
                .unwrap_or("unknown")
        );
        store.delete(key).await?;
    }
    Ok(())
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn refresh(
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
                tracing::warn!("run lock refresh could not read {key}: {e}");
                continue;
            }
        }
        b.expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15));
        if let Ok(json) = serde_json::to_vec_pretty(&b) {
            if let Err(e) = store.put(&key, Bytes::from(json)).await {
                tracing::warn!("run lock refresh could not refresh {key}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
        dr_store::open(&dr_store::Location::Directory {
            root: dir.to_path_buf(),
        })
        .await
        .expect("dir store")
    }

    fn held(process: Option<Process>, expires_in: chrono::Duration) -> LockBody {
        LockBody {
            target: "app".into(),
            holder: "someone".into(),
            operation: "backup".into(),
            acquired_at: Utc::now(),
            expires_at: Utc::now() + expires_in,
            token: "theirs".into(),
            process,
        }
    }

    async fn put(store: &dyn ObjectStore, b: &LockBody) {
        let json = serde_json::to_vec(b).expect("json");
        store
            .put(&dr_catalog::keys::lock("app"), Bytes::from(json))
            .await
            .expect("put lock");
    }

    async fn take(store: &Arc<dyn ObjectStore>, outlast: bool) -> Result<RunLock> {
        RunLock::acquire(
            Arc::clone(store),
            "app",
            "backup",
            Duration::from_secs(60),
            Duration::ZERO,
            outlast,
            &CancellationToken::new(),
        )
        .await
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_lock_whose_process_is_gone_from_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = store(dir.path()).await;
        let me = Process::current();
        let mine = me.instance.clone().expect("/proc tells");
        // A live holder (this very process, another task): not taken over.
        put(
            store.as_ref(),
            &held(Some(me.clone()), chrono::Duration::hours(1)),
        )
        .await;
        let e = take(&store, false)
            .await
            .err()
            .expect("held by a live process");
        assert_eq!(e.kind, Kind::Locked);
        // Another host's process: not provable, not taken over.
        let other = Process {
            host: "elsewhere".into(),
            ..Process::current()
        };
        put(
            store.as_ref(),
            &held(Some(other), chrono::Duration::hours(1)),
        )
        .await;
        assert!(take(&store, false).await.is_err());
        // Same pid, another start time (the pid was reused): gone.
        let (boot_ns, _) = mine.rsplit_once(' ').expect("3 fields");
        let reused = Process {
            instance: Some(format!("{boot_ns} 1")),
            ..me.clone()
        };
        put(
            store.as_ref(),
            &held(Some(reused), chrono::Duration::hours(1)),
        )
        .await;
        take(&store, false)
            .await
            .expect("taken over")
            .release()
            .await;
        // A pid that does not exist: gone.
        let dead = Process {
            pid: 0x3fff_fff0,
            instance: Some(mine.clone()),
            ..me.clone()
        };
        put(
            store.as_ref(),
            &held(Some(dead), chrono::Duration::hours(1)),
        )
        .await;
        take(&store, false)
            .await
            .expect("taken over")
            .release()
            .await;
        // A lock of an older dr, without a process: not provable.
        put(store.as_ref(), &held(None, chrono::Duration::hours(1))).await;
        assert!(take(&store, false).await.is_err());
    }

    #[tokio::test]
    async fn a_scheduled_run_waits_out_a_lock_nobody_refreshes_and_not_a_refreshed_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = store(dir.path()).await;
        let elsewhere = Process {
            host: "elsewhere".into(),
            pid: 1,
            instance: None,
        };
        // Dead on another host: its lock expires in 2 s and nobody refreshes it.
        put(
            store.as_ref(),
            &held(Some(elsewhere.clone()), chrono::Duration::seconds(2)),
        )
        .await;
        assert!(take(&store, false).await.is_err(), "a one-shot run fails");
        let t = std::time::Instant::now();
        take(&store, true).await.expect("outlasted").release().await;
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

        // Alive: it refreshes its lock; the scheduled run gives up then.
        let mut b = held(Some(elsewhere), chrono::Duration::seconds(30));
        put(store.as_ref(), &b).await;
        let refresher = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                b.expires_at = Utc::now() + chrono::Duration::seconds(30);
                put(store.as_ref(), &b).await;
            })
        };
        let e = take(&store, true).await.err().expect("alive");
        assert_eq!(e.kind, Kind::Locked);
        refresher.await.expect("refresher");
    }
}
