//! The server as a whole: its databases (which accept connections) and its lock table.

use crate::PgError;

/// A database of the server, as `pg_database` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDatabase {
    pub name: String,
    /// `datallowconn`: false for `template0` and for databases an administrator closed
    /// (`ALTER DATABASE … ALLOW_CONNECTIONS false`): nobody, pg_dump included, can connect.
    pub allows_connections: bool,
    /// `datistemplate`.
    pub is_template: bool,
}

/// Every database of the server, in name order.
pub async fn server_databases(
    client: &tokio_postgres::Client,
) -> Result<Vec<ServerDatabase>, PgError> {
    Ok(client
        .query(
            "select datname::text, datallowconn, datistemplate from pg_database order by datname",
            &[],
        )
        .await
        .map_err(|e| PgError::query("reading pg_database", e))?
        .iter()
        .map(|r| ServerDatabase {
            name: r.get(0),
            allows_connections: r.get(1),
            is_template: r.get(2),
        })
        .collect())
}

/// The server's shared lock table: every session's table locks (beyond the few each keeps
/// on its own) come out of it; a transaction that locks more than is left fails with "out
/// of shared memory".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTable {
    pub max_locks_per_transaction: u64,
    pub max_connections: u64,
    pub max_prepared_transactions: u64,
}

impl LockTable {
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`: what the
    /// documentation promises (the server rounds up a little for its own processes).
    pub fn slots(&self) -> u64 {
        self.max_locks_per_transaction
            .saturating_mul(self.max_connections + self.max_prepared_transactions)
    }

    pub async fn query(client: &tokio_postgres::Client) -> Result<LockTable, PgError> {
        let row = client
            .query_one(
                "select current_setting('max_locks_per_transaction')::bigint,
                        current_setting('max_connections')::bigint,
                        current_setting('max_prepared_transactions')::bigint",
                &[],
            )
            .await
            .map_err(|e| PgError::query("reading the lock table settings", e))?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(LockTable {
            max_locks_per_transaction: n(0),
            max_connections: n(1),
            max_prepared_transactions: n(2),
        })
    }
}

impl std::fmt::Display for LockTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_locks_per_transaction {} × (max_connections {} + max_prepared_transactions {}) = {}",
            self.max_locks_per_transaction,
            self.max_connections,
            self.max_prepared_transactions,
            self.slots()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_documented_product() {
        let t = LockTable {
            max_locks_per_transaction: 64,
            max_connections: 100,
            max_prepared_transactions: 0,
        };
        assert_eq!(t.slots(), 6400);
        assert_eq!(
            t.to_string(),
            "max_locks_per_transaction 64 × (max_connections 100 + max_prepared_transactions 0) = 6400"
        );
    }
}
