//! No silent waits: while a backup runs, every [`REPORT_EVERY`] each of its sessions (the
//! snapshot's counting, the pg_dumps, pg_dumpall: named after the run) that waits for a
//! lock is logged with what it waits for, who holds it, and when dr gives up; a wait that
//! timed out names the sessions holding exclusive locks in the error.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_pg::{ConnInfo, LockWait};

use crate::{Context, Error, Kind};

/// How often a backup that waits for a lock says so.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A wait shorter than this is not worth a line (a lock taken and released in passing).
const QUIET_SECS: i64 = 3;

/// The watcher: stops when dropped (the run is over, whatever the outcome).
pub(super) struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watch the sessions named `session_names` on `conn`'s server until the returned
/// [`Watcher`] is dropped. `lock_wait` is `backup.lock_wait_timeout_secs` (0: no limit);
/// `deadline` is when `backup.max_duration` stops the run.
pub(super) fn watch(
    conn: &ConnInfo,
    session_names: [String; 2],
    lock_wait_secs: u64,
    deadline: DateTime<Utc>,
    max_duration: String,
) -> Watcher {
    let conn = conn.clone();
    Watcher(tokio::spawn(async move {
        let mut client = None;
        let mut last_report: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if client.is_none() {
                client = conn.connect().await.ok();
            }
            let Some(c) = &client else { continue };
            let mut waits = Vec::new();
            for name in &session_names {
                match dr_pg::lock_waits(c, name).await {
                    Ok(w) => waits.extend(w),
                    Err(e) => {
                        tracing::debug!("cannot look for lock waits: {e}");
                        client = None;
                        break;
                    }
                }
            }
            if client.is_none() {
                continue;
            }
            let due = !matches!(last_report, Some(t) if t.elapsed() < REPORT_EVERY);
            let long: Vec<&LockWait> = waits
                .iter()
                .filter(|w| w.waiting_secs >= QUIET_SECS)
                .collect();
            if !due || long.is_empty() {
                continue;
            }
            last_report = Some(tokio::time::Instant::now());
            let now = Utc::now();
            for w in long {
                tracing::warn!(
                    "backup waiting for a lock: {w}; {}",
                    give_up(w.waiting_secs, lock_wait_secs, deadline, &max_duration, now)
                );
            }
        }
    }))
}

/// When dr stops waiting, for a wait that began `waiting_secs` before `now`: the lock wait
/// limit's end or the run's `deadline`, whichever comes first. Pure.
pub(super) fn give_up(
    waiting_secs: i64,
    lock_wait_secs: u64,
    deadline: DateTime<Utc>,
    max_duration: &str,
    now: DateTime<Utc>,
) -> String {
    let began = now - chrono::Duration::seconds(waiting_secs.max(0));
    let by_limit = (lock_wait_secs > 0).then(|| {
        began + chrono::Duration::seconds(i64::try_from(lock_wait_secs).unwrap_or(i64::MAX / 2))
    });
    let (at, why) = match by_limit {
        Some(at) if at <= deadline => (
            at,
            format!("backup.lock_wait_timeout_secs = {lock_wait_secs}"),
        ),
        _ => (
            deadline,
            format!(
                "backup.max_duration = {max_duration}{}",
                if lock_wait_secs == 0 {
                    "; backup.lock_wait_timeout_secs = 0 waits for locks as long as it takes"
                } else {
                    ""
                }
            ),
        ),
    };
    let left = (at - now).num_seconds().max(0);
    format!(
        "dr gives up at {} UTC, in {left} s ({why})",
        at.format("%Y-%m-%d %H:%M:%S")
    )
}

/// A lock wait that timed out (pg_dump's `--lock-wait-timeout`, or the counting's
/// `lock_timeout`): name the sessions holding ACCESS EXCLUSIVE locks, so the operator knows
/// whom to ask (or what to end) before retrying.
pub(super) async fn explain_lock_timeout(e: Error, conn: &ConnInfo, ctx: &Context) -> Error {
    // pg_dump's --lock-wait-timeout is a statement_timeout around its LOCK TABLE; the
    // counting's is lock_timeout.
    let text = e.to_string();
    let lock_wait = text.contains("lock timeout")
        || (text.contains("statement timeout") && text.contains("LOCK TABLE"));
    if !lock_wait {
        return e;
    }
    let secs = ctx.config.backup.lock_wait_timeout_secs;
    let holders = match dr_pg::exclusive_lock_holders(conn).await {
        Ok(h) if h.is_empty() => {
            "the lock was released since; no session holds an exclusive table lock now".into()
        }
        Ok(h) => h
            .iter()
            .map(|h| format!("  {h}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(le) => format!("(could not list the lock holders: {le})"),
    };
    Error::new(
        Kind::Failed,
        format!(
            "{}\nwaited {secs} s (backup.lock_wait_timeout_secs) for a table lock; sessions holding exclusive locks:\n{holders}",
            e.summary()
        ),
    )
    .with_hint("let that session finish (or end it: SELECT pg_terminate_backend(PID)), then run the backup again; long migrations are better scheduled away from the backup window")
    // The holder may be done by the next try.
    .retryable(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, s)
            .single()
            .expect("time")
    }

    #[test]
    fn gives_up_at_the_lock_wait_limit_from_the_start_of_the_wait() {
        let now = at(3, 0, 20);
        assert_eq!(
            give_up(20, 300, at(23, 0, 0), "24h", now),
            "dr gives up at 2026-12-03 03:05:00 UTC, in 280 s (backup.lock_wait_timeout_secs = 300)"
        );
    }

    #[test]
    fn gives_up_at_max_duration_when_it_comes_first_or_locks_wait_forever() {
        let now = at(3, 0, 20);
        assert_eq!(
            give_up(20, 300, at(3, 1, 0), "1h", now),
            "dr gives up at 2026-12-03 03:01:00 UTC, in 40 s (backup.max_duration = 1h)"
        );
        let forever = give_up(20, 0, at(4, 0, 0), "1h", now);
        assert!(forever.starts_with("dr gives up at 2026-12-03 04:00:00 UTC, in 3580 s (backup.max_duration = 1h; backup.lock_wait_timeout_secs = 0"), "{forever}");
    }
}
