//! What a stopped restore leaves behind: its sessions ended, then the database it created
//! dropped, or the existing one reported as partially restored with the command to retry.

use std::time::Duration;

use dr_pg::ConnInfo;

use super::layout::Load;
use crate::{Error, Result};

/// After a stopped restore: end its sessions, then drop the database it created, or say
/// the existing one is partially restored and how to retry.
pub(super) async fn leave_target(
    l: &Load<'_>,
    created: bool,
    session_name: &str,
    mut e: Error,
) -> Error {
    let conn = &l.target.conn;
    match dr_pg::end_sessions(conn, session_name, Duration::from_secs(10)).await {
        Ok(0) => {}
        Ok(n) => tracing::error!(
            "{n} session(s) of the stopped restore are still on the server (application_name `{session_name}`)"
        ),
        Err(err) => tracing::error!("could not end the stopped restore's sessions: {err}"),
    }
    let db = conn.dbname();
    if created {
        return drop_created(conn, l.target.major, l.opts.with_globals, e).await;
    }
    e.details.push(format!(
        "the database {db} is PARTIALLY restored: the restore stopped part-way through"
    ));
    e.with_hint(format!("to restore it again: {}", retry_command(l)))
}

/// After a failed restore into a database it created: drop it, or, when the server cannot be
/// asked (it is gone), say so and give the `DROP DATABASE` to run. Any layout (format 1 or
/// sections).
pub(super) async fn drop_created(
    conn: &ConnInfo,
    major: u32,
    with_globals: bool,
    mut e: Error,
) -> Error {
    let db = conn.dbname();
    match drop_database(conn, major).await {
        Ok(()) => e.details.push(if with_globals {
            format!("the database {db} that this restore created was dropped; roles that --with-globals created stay")
        } else {
            format!("the database {db} that this restore created was dropped: the server is as it was before")
        }),
        Err(err) => {
            let sql = dr_pg::target::drop_database_by_hand(db);
            e.details.push(format!(
                "the database {db} that this restore created could not be dropped ({}): it is left half-restored",
                err.message
            ));
            e.details.push(format!(
                "once the server {} is back, run: {sql}",
                conn.host_display()
            ));
            e = e.with_hint(format!(
                    "drop the half-restored database when the server is back: psql -h {} -p {} -U {} -d postgres -c '{sql}'",
                    conn.host_display().rsplit_once(':').map_or(conn.host_display(), |(h, _)| h.to_string()),
                    conn.port(),
                    conn.user()
            ));
        }
    }
    e
}

/// The `dr restore` that restores the same backup over the partial one: exactly what the
/// operator asked (selection, `--force`), never a wider `--clean` than they chose, and
/// without `--yes`, so the plan is shown and confirmed again.
fn retry_command(l: &Load<'_>) -> String {
    let o = l.opts;
    let selective = !o.tables.is_empty() || !o.schemas.is_empty();
    let mut cmd = format!("dr restore {} --to '{}'", l.origin.again, l.target.conn);
    for t in &o.tables {
        cmd.push_str(&format!(" --table '{t}'"));
    }
    for sc in &o.schemas {
        cmd.push_str(&format!(" --schema '{sc}'"));
    }
    // A whole backup over its partial self: --clean replaces the backup's own objects (and
    // nothing else). A selection cannot be cleaned (refused): it is repeated as it was.
    if selective {
        cmd.push_str(" --force");
    } else {
        cmd.push_str(" --clean");
    }
    if o.with_globals {
        cmd.push_str(" --with-globals");
    }
    if o.no_owner {
        cmd.push_str(" --no-owner");
    }
    cmd.push_str(&format!(" --jobs {}", l.jobs));
    if selective {
        cmd.push_str(" (a selective restore over a partial one may leave rows twice: restoring the selection into a new database and copying from there is safer)");
    }
    if let Some(id) = &l.origin.backup_id {
        cmd.push_str(" (or, for an older backup, its id from `dr list` in place of ");
        cmd.push_str(id);
        cmd.push(')');
    }
    cmd
}

async fn drop_database(conn: &ConnInfo, major: u32) -> Result<()> {
    let admin = conn.connect_admin().await?;
    dr_pg::target::drop_database(&admin, conn.dbname(), major).await?;
    tracing::warn!(
        "dropped database {} (created by the stopped restore)",
        conn.dbname()
    );
    Ok(())
}
