//! The database a backup reads, as its session sees it: its size and whether the role dr
//! logs in as is a superuser.

use tokio_postgres::Client;

use crate::PgError;

/// `pg_database_size` of the database `client` is connected to, in bytes.
pub async fn database_size(client: &Client) -> Result<u64, PgError> {
    let bytes: i64 = client
        .query_one("select pg_database_size(current_database())", &[])
        .await
        .map_err(|e| PgError::query("reading the database size", e))?
        .get(0);
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Whether the role `client` logged in as is a superuser (`rolsuper`).
pub async fn is_superuser(client: &Client) -> Result<bool, PgError> {
    Ok(client
        .query_one(
            "select rolsuper from pg_roles where rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| PgError::query("reading whether the role is a superuser", e))?
        .get(0))
}
