//! Who holds what on the server: the sessions a run waits for, named so the operator can act
//! (`pg_locks`, `pg_stat_activity`), and ending dr's own sessions after its children stopped.

use std::time::Duration;

use crate::{ConnInfo, PgError};

/// One session that holds a lock another one waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The locked table (`schema.table`), when the lock is on a relation.
    pub relation: Option<String>,
    pub mode: String,
    pub pid: i32,
    pub user: String,
    pub application: String,
    pub client: String,
    pub state: String,
    /// Seconds since its transaction began.
    pub transaction_secs: i64,
    pub query: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.relation {
            write!(f, "{} on {r} ", self.mode)?;
        }
        write!(
            f,
            "held by pid {} (user {}, application `{}`, from {}, {} for {} s: {})",
            self.pid,
            self.user,
            self.application,
            self.client,
            self.state,
            self.transaction_secs,
            self.query
        )
    }
}

const HOLDER_COLUMNS: &str =
    "b.pid, coalesce(b.usename::text, ''), coalesce(b.application_name, ''),
     coalesce(b.client_addr::text, 'local socket'), coalesce(b.state, ''),
     coalesce(extract(epoch from now() - b.xact_start)::bigint, 0),
     left(regexp_replace(coalesce(b.query, ''), '\\s+', ' ', 'g'), 200)";

/// The [`HOLDER_COLUMNS`] of a row, starting at column `at`.
fn holder(
    r: &tokio_postgres::Row,
    at: usize,
    relation: Option<String>,
    mode: String,
) -> LockHolder {
    LockHolder {
        relation,
        mode,
        pid: r.get(at),
        user: r.get(at + 1),
        application: r.get(at + 2),
        client: r.get(at + 3),
        state: r.get(at + 4),
        transaction_secs: r.get(at + 5),
        query: r.get(at + 6),
    }
}

/// Sessions of other clients holding ACCESS EXCLUSIVE locks on tables of `conn`'s database:
/// what makes `pg_dump` (and row counting) wait. Named in the error when a lock wait timed out.
pub async fn exclusive_lock_holders(conn: &ConnInfo) -> Result<Vec<LockHolder>, PgError> {
    let client = conn.connect().await?;
    let sql = format!(
        "select {HOLDER_COLUMNS}, coalesce(l.relation::regclass::text, ''), l.mode
           from pg_locks l join pg_stat_activity b on b.pid = l.pid
          where l.locktype = 'relation' and l.granted and l.mode = 'AccessExclusiveLock'
            and l.database = (select oid from pg_database where datname = current_database())
            and l.pid <> pg_backend_pid()
          order by b.xact_start nulls last, l.relation"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::query("looking for sessions holding locks", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let rel: String = r.get(7);
            holder(r, 0, (!rel.is_empty()).then_some(rel), r.get(8))
        })
        .collect())
}

/// A session of `application` waiting for a lock: what it waits for, since when, and who
/// blocks it.
#[derive(Debug, Clone)]
pub struct LockWait {
    pub pid: i32,
    /// Seconds it has waited for the lock (since the wait began where the server says so,
    /// PostgreSQL 14+; else since its statement began).
    pub waiting_secs: i64,
    pub query: String,
    /// The relation it waits for (`schema.table`), when the lock is on one.
    pub relation: Option<String>,
    /// The mode it asks for (`AccessShareLock`, ...); empty when the server did not say.
    pub mode: String,
    /// `pg_locks.locktype` of what it waits for (`relation`, `transactionid`, `tuple`, ...).
    pub locktype: String,
    /// Who blocks it; each with the mode it holds on that relation, when it holds one.
    pub blockers: Vec<LockHolder>,
}

impl LockWait {
    /// What the session waits for: "AccessShareLock on public.t", "ShareLock (transactionid)".
    pub fn waited_for(&self) -> String {
        let mode = if self.mode.is_empty() {
            "a lock"
        } else {
            self.mode.as_str()
        };
        match (&self.relation, self.locktype.as_str()) {
            (Some(r), _) => format!("{mode} on {r}"),
            (None, "") => mode.to_string(),
            (None, t) => format!("{mode} ({t})"),
        }
    }
}

impl std::fmt::Display for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} has waited {} s for a lock: {} ({})",
            self.pid,
            self.waiting_secs,
            self.waited_for(),
            self.query
        )?;
        for b in &self.blockers {
            write!(f, "; blocked by {b}")?;
        }
        Ok(())
    }
}

/// The sessions named `application` that wait for a lock right now.
pub async fn lock_waits(
    client: &tokio_postgres::Client,
    application: &str,
) -> Result<Vec<LockWait>, PgError> {
    // `waitstart` is PostgreSQL 14+: read through to_jsonb so older servers answer too.
    let sql = format!(
        "select w.pid as wpid,
                coalesce(extract(epoch from now() - coalesce((to_jsonb(wl) ->> 'waitstart')::timestamptz,
                                                              w.state_change))::bigint, 0),
                left(regexp_replace(coalesce(w.query, ''), '\\s+', ' ', 'g'), 200) as wquery,
                {HOLDER_COLUMNS},
                coalesce(case when wl.locktype = 'relation' then
                    coalesce((select format('%I.%I', n.nspname, c.relname)
                                from pg_class c join pg_namespace n on n.oid = c.relnamespace
                               where c.oid = wl.relation), wl.relation::text) end, ''),
                coalesce(wl.mode, ''), coalesce(wl.locktype, ''),
                coalesce((select string_agg(distinct hl.mode, ', ') from pg_locks hl
                           where hl.pid = b.pid and hl.granted and hl.locktype = wl.locktype
                             and hl.database is not distinct from wl.database
                             and hl.relation is not distinct from wl.relation
                             and hl.transactionid is not distinct from wl.transactionid), '')
           from pg_stat_activity w
           left join lateral (select * from pg_locks l where l.pid = w.pid and not l.granted
                               limit 1) wl on true
           left join lateral unnest(pg_blocking_pids(w.pid)) as bp(pid) on true
           left join pg_stat_activity b on b.pid = bp.pid
          where w.application_name = $1 and w.wait_event_type = 'Lock'
          order by w.pid, b.pid"
    );
    let rows = client
        .query(&sql, &[&application])
        .await
        .map_err(|e| PgError::query("looking for lock waits", e))?;
    let mut out: Vec<LockWait> = Vec::new();
    for r in &rows {
        let pid: i32 = r.get(0);
        let relation: String = r.get(10);
        let relation = (!relation.is_empty()).then_some(relation);
        if out.last().map(|w| w.pid) != Some(pid) {
            out.push(LockWait {
                pid,
                waiting_secs: r.get(1),
                query: r.get(2),
                relation: relation.clone(),
                mode: r.get(11),
                locktype: r.get(12),
                blockers: Vec::new(),
            });
        }
        let blocker: Option<i32> = r.get(3);
        if blocker.is_some() {
            let held: String = r.get(13);
            // A blocker queued ahead holds nothing on it yet: no mode to name.
            let on = relation.filter(|_| !held.is_empty());
            if let Some(w) = out.last_mut() {
                w.blockers.push(holder(r, 3, on, held));
            }
        }
    }
    Ok(out)
}

/// End every session named `application` on `conn`'s server and wait (up to `deadline`) until
/// none is left. After a stopped child this makes sure nothing keeps running in the server on
/// its behalf (a backend busy building an index notices a lost client only when it finishes).
/// Returns how many sessions were still there at the end.
pub async fn end_sessions(
    conn: &ConnInfo,
    application: &str,
    deadline: Duration,
) -> Result<i64, PgError> {
    let admin = conn.connect_admin().await?;
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let left: i64 = admin
            .query_one(
                "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
                  where application_name = $1 and pid <> pg_backend_pid()) t",
                &[&application],
            )
            .await
            .map_err(|e| PgError::query("ending the restore's sessions", e))?
            .get(0);
        if left == 0 || tokio::time::Instant::now() >= until {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
