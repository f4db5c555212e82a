//! Applying the backup's roles and tablespaces to the target (which statements of the
//! `pg_dumpall --globals-only` script to run is `dr_pg::globals_statements`'s).

use std::collections::BTreeSet;

use dr_pg::{first_words, globals_statements, ConnInfo};

use crate::{Error, Kind, Result};

/// Create the roles (and tablespaces) the target lacks; never alter existing ones.
/// Returns error lines (a failure here is reported, and the restore continues).
pub async fn apply_globals(conn: &ConnInfo, sql: &[u8]) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(sql);
    let admin = conn.connect_admin().await?;
    let existing: BTreeSet<String> = admin
        .query("select rolname::text from pg_roles", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing roles: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let spaces: BTreeSet<String> = admin
        .query("select spcname::text from pg_tablespace", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing tablespaces: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut errors = Vec::new();
    let mut created = 0;
    for stmt in globals_statements(&text, &existing, &spaces) {
        match admin.batch_execute(&stmt).await {
            Ok(()) => {
                if stmt.starts_with("CREATE ") {
                    created += 1;
                }
            }
            Err(e) => {
                let msg = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                errors.push(format!("globals: {msg} (in: {})", first_words(&stmt)));
            }
        }
    }
    tracing::info!(
        created,
        skipped_existing = existing.len(),
        "roles and tablespaces applied"
    );
    Ok(errors)
}
