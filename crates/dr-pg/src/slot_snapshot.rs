//! A snapshot whose WAL position is known exactly: the one a temporary logical replication
//! slot exports when it is created (`CREATE_REPLICATION_SLOT … TEMPORARY LOGICAL pgoutput
//! (SNAPSHOT 'export')`, PostgreSQL ≥ 15, `wal_level = logical`). Its consistent point is
//! the LSN from which the slot would decode: every transaction that committed before it is
//! in the snapshot, none after. A recovery that replays exactly the WAL before that LSN
//! (`recovery_target_lsn`, `recovery_target_inclusive = off`) holds exactly what a dump
//! taken in the snapshot holds: what makes a drill's row counts exact under writes.
//!
//! The replication protocol is not spoken by tokio-postgres: `psql` on a
//! `replication=database` connection sends the command. Its result goes to a private file
//! (`\g FILE`: written and closed before psql reads its next line), not to a pipe whose
//! buffering psql does not promise to flush. The snapshot lives while that session is open
//! and idle: the caller imports it ([`crate::Snapshot::begin`]) and then
//! [`SlotSnapshot::release`]s it; the temporary slot goes with the session.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::process::ProcessFailure;
use crate::{ChildProcess, ConnInfo, PgError, Tool};

/// The slot's exported snapshot, held by an open replication session.
pub struct SlotSnapshot {
    child: ChildProcess,
    stdin: Option<tokio::process::ChildStdin>,
    _dir: tempfile::TempDir,
    /// The snapshot's id, for `SET TRANSACTION SNAPSHOT` / `pg_dump --snapshot`.
    pub id: String,
    /// The slot's consistent point: the WAL position the snapshot corresponds to.
    pub lsn: String,
    pub slot: String,
}

/// The server's `wal_level`: a snapshot with its exact WAL position needs `logical`.
pub async fn wal_level(client: &tokio_postgres::Client) -> Result<String, PgError> {
    Ok(client
        .query_one("select current_setting('wal_level')", &[])
        .await
        .map_err(|e| PgError::query("reading wal_level", e))?
        .get(0))
}

/// A slot name of this process (names allow lowercase letters, digits and `_`).
pub fn slot_name(n: u32) -> String {
    format!("dr_snapshot_{}_{n}", std::process::id())
}

impl SlotSnapshot {
    /// Create the temporary slot with `psql` (connected to `conn`'s database) and read its
    /// snapshot. Creating a logical slot waits for the transactions running at that moment
    /// to end: at most `wait`, then the session is ended and the error says so.
    pub async fn create(
        psql: &Tool,
        conn: &ConnInfo,
        slot: &str,
        wait: Duration,
    ) -> Result<SlotSnapshot, PgError> {
        // Private (0700): psql's result file names the snapshot.
        let dir = tempfile::Builder::new()
            .prefix("dr-slot-")
            .tempdir()
            .map_err(|e| PgError::Query {
                what: "creating the snapshot's replication slot".into(),
                detail: format!("cannot create a temporary directory: {e}"),
                hint: Some("check TMPDIR: it must be writable".into()),
                transient: false,
            })?;
        let out = dir.path().join(format!("{slot}.result"));
        let args = vec![
            "-X".into(),
            "-q".into(),
            "-A".into(),
            "-t".into(),
            "-F".into(),
            "|".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "--no-password".into(),
            "-d".into(),
            format!("{} replication=database", conn.dbname_arg()),
        ];
        let mut child =
            ChildProcess::spawn(&psql.path, &args, Some(conn), Stdio::piped(), Stdio::null())?;
        let mut stdin = child.stdin();
        let command = format!(
            "CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export') \\g {}\n",
            out.display()
        );
        let sent = match stdin.as_mut() {
            Some(s) => s.write_all(command.as_bytes()).await.and(s.flush().await),
            None => Err(std::io::Error::other("psql has no stdin")),
        };
        if let Err(e) = sent {
            child.stop().await;
            return Err(PgError::Query {
                what: "creating the snapshot's replication slot".into(),
                detail: format!("cannot talk to psql: {e}"),
                hint: None,
                transient: false,
            });
        }
        match read_result(&mut child, &out, wait).await {
            Ok((id, lsn)) => Ok(SlotSnapshot {
                child,
                stdin,
                _dir: dir,
                id,
                lsn,
                slot: slot.to_string(),
            }),
            Err(e) => {
                drop(stdin);
                if child.exited() {
                    let finished = child.wait().await;
                    return Err(slot_failed(finished.err(), e));
                }
                child.stop().await;
                Err(e)
            }
        }
    }

    /// End the session: the snapshot (imported by now) and the temporary slot go with it.
    pub async fn release(mut self) {
        drop(self.stdin.take());
        let waited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!(
                "psql holding replication slot {} did not end cleanly; the slot is temporary and goes with its session",
                self.slot
            );
        }
    }
}

/// Poll psql's result file until it holds the slot's row: `slot|lsn|snapshot|plugin`.
async fn read_result(
    child: &mut ChildProcess,
    out: &Path,
    wait: Duration,
) -> Result<(String, String), PgError> {
    let started = Instant::now();
    loop {
        if let Ok(text) = tokio::fs::read_to_string(out).await {
            if let Some(found) = parse_result(&text) {
                let _ = tokio::fs::remove_file(out).await;
                return Ok(found);
            }
        }
        if child.exited() {
            return Err(PgError::Query {
                what: "creating the snapshot's replication slot".into(),
                detail: "psql ended before it printed the slot".into(),
                hint: None,
                transient: false,
            });
        }
        if started.elapsed() >= wait {
            return Err(PgError::Query {
                what: "creating the snapshot's replication slot".into(),
                detail: format!(
                    "it waited {} s for the transactions running when it started to end",
                    wait.as_secs()
                ),
                hint: Some(
                    "a long-running or idle-in-transaction session holds it up: pg_stat_activity shows it (xact_start); end it, or back up without the exact WAL position (wal_level = replica)".into(),
                ),
                transient: true,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The row psql wrote, once complete: `(snapshot id, consistent point)`.
fn parse_result(text: &str) -> Option<(String, String)> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    if !text.ends_with('\n') {
        return None;
    }
    let fields: Vec<&str> = line.split('|').collect();
    match fields.as_slice() {
        [_, lsn, snapshot, _] if lsn.contains('/') && !snapshot.is_empty() => {
            Some(((*snapshot).to_string(), (*lsn).to_string()))
        }
        _ => None,
    }
}

/// psql failed: its stderr names why (no REPLICATION attribute, wal_level, no free slot).
fn slot_failed(finished: Option<PgError>, fallback: PgError) -> PgError {
    let Some(PgError::Failed(f)) = finished else {
        return fallback;
    };
    let text = f.to_string();
    let hint = if text.contains("must be superuser or replication role")
        || text.contains("permission denied to use replication slots")
        || text.contains("REPLICATION attribute")
    {
        Some("the backup role needs the REPLICATION attribute for the exact WAL position: `ALTER ROLE … REPLICATION`")
    } else if text.contains("wal_level") {
        Some("set wal_level = logical (restart) for the exact WAL position, or leave it at replica")
    } else if text.contains("all replication slots are in use") {
        Some("raise max_replication_slots (restart): the backup creates one temporary slot per database")
    } else {
        None
    };
    PgError::Failed(ProcessFailure {
        hint: hint.map(str::to_string).or(f.hint.clone()),
        ..f
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_row_is_read_only_once_complete() {
        let row = "dr_snapshot_1_1|0/3000060|00000003-00000002-1|pgoutput\n";
        assert_eq!(
            parse_result(row),
            Some(("00000003-00000002-1".into(), "0/3000060".into()))
        );
        assert_eq!(parse_result(&row[..20]), None, "a partial write");
        assert_eq!(parse_result(""), None);
        assert_eq!(parse_result("x|y\n"), None);
    }

    #[test]
    fn slot_names_are_valid_slot_names() {
        let n = slot_name(7);
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        assert!(n.len() <= 63);
    }
}
