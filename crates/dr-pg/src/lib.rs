//! PostgreSQL as dr sees it: connections (with libpq's password sources), server versions,
//! finding client binaries of the right major, the exported snapshot with exact row counts,
//! `pg_dump` / `pg_dumpall` / `pg_restore` as child processes, and the text formats they
//! print: the `pg_restore --list` table of contents a selective restore filters ([`select_entries`]) and
//! the `pg_dumpall --globals-only` script ([`globals_statements`]), and the WAL segment page
//! header ([`WalHeader`]).
//!
//! Every SQL statement dr runs is here: on the database a backup reads ([`source`]), on the
//! database a restore writes into ([`target`]), the checks verify runs on a restored one
//! ([`checks`]), and the snapshot, lock and globals queries behind the functions above.
//!
//! Secrets never reach argv: children get the connection through `PG*` environment variables.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dr_pg::PgError> {
//! let conn = dr_pg::ConnInfo::parse("postgres://app@127.0.0.1:5432/app")?;
//! let client = conn.connect().await?;
//! let version = dr_pg::ServerVersion::query(&client).await?;
//! let pg_dump = dr_pg::find_tool("pg_dump", version.major, None)?;
//! # Ok(()) }
//! ```

mod activity;
pub mod basebackup;
pub mod checks;
mod conn;
pub mod copy;
mod dumped;
mod error;
mod globals;
mod process;
pub mod proof;
pub mod recovery;
pub mod replication;
mod server;
pub mod slot_snapshot;
mod snapshot;
pub mod source;
mod split;
pub mod target;
mod tls;
mod toc;
mod tools;
pub mod unpack;
mod wal_header;

pub use activity::{end_sessions, exclusive_lock_holders, lock_waits, LockHolder, LockWait};
pub use conn::{ConnInfo, NetworkLimits};
pub use error::{describe, transient_sqlstate, PgError};
pub use globals::{
    first_words, globals_statements, plan_globals, run_globals_plan, GlobalsApplied, GlobalsPlan,
    PowerfulRole, TargetGlobals,
};
pub use process::{lost_connection, ChildProcess, Finished, ProcessFailure};
pub use server::{server_databases, LockTable, ServerDatabase};
pub use snapshot::{
    count_tables, count_tables_parallel, dumped_table_count, quote_ident, Inventory, SequenceState,
    Snapshot, TableRows,
};
pub use split::{exact_pattern, split_data, DataSplit, DataStream, TableSize, MAX_SPLIT_TABLES};
pub use toc::{parse_schema_name, parse_table_name, select_entries, Selected, Selection};
/// A connection ([`ConnInfo::connect`]): what the query functions of this crate take.
pub use tokio_postgres::Client;
pub use tools::{find_tool, parse_version_output, tool_at, Tool};
pub use wal_header::{WalHeader, WalHeaderError, WAL_LONG_HEADER_BYTES};

/// The server's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// e.g. 150018
    pub num: u32,
    pub major: u32,
    /// `SHOW server_version`
    pub text: String,
}

impl ServerVersion {
    pub async fn query(client: &tokio_postgres::Client) -> Result<ServerVersion, PgError> {
        let row = client
            .query_one(
                "select current_setting('server_version_num')::int, current_setting('server_version')",
                &[],
            )
            .await
            .map_err(|e| PgError::query("reading the server version", e))?;
        let num: i32 = row.get(0);
        let num = u32::try_from(num).unwrap_or(0);
        Ok(ServerVersion {
            num,
            major: num / 10000,
            text: row.get(1),
        })
    }
}
