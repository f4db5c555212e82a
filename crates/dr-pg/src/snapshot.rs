//! An exported snapshot and the exact inventory of what `pg_dump --snapshot` will dump.
//!
//! The counts are taken inside the transaction that exported the snapshot, so they describe
//! exactly the data pg_dump reads. The transaction must stay open until pg_dump exits:
//! keep the [`Snapshot`] alive until then.

use serde::{Deserialize, Serialize};

use crate::dumped::dumped_tables_where;
use crate::{ConnInfo, PgError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub name: String,
    pub rows: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceState {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

/// What the database holds, as of the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub database: String,
    pub tables: Vec<TableRows>,
    pub sequences: Vec<SequenceState>,
    pub large_objects: u64,
    pub extensions: Vec<String>,
    pub owners: Vec<String>,
}

/// A REPEATABLE READ transaction that exported its snapshot.
pub struct Snapshot {
    pub(crate) client: tokio_postgres::Client,
    id: String,
    backend_pid: i32,
}

/// Tables whose data pg_dump copies, largest first, so parallel counting starts with the long
/// scans; callers that need name order sort.
const TABLES_SQL: &str = concat!(
    "select n.nspname::text, c.relname::text
from pg_class c join pg_namespace n on n.oid = c.relnamespace",
    dumped_tables_where!(),
    "order by c.relpages desc, 1, 2"
);

/// Every table pg_dump copies, as (schema, name), largest first.
async fn list_tables(client: &tokio_postgres::Client) -> Result<Vec<(String, String)>, PgError> {
    Ok(client
        .query(TABLES_SQL, &[])
        .await
        .map_err(|e| PgError::query("listing tables", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// How many tables pg_dump copies (and the backup locks, each in one transaction): what
/// the server's lock table must hold, see [`crate::LockTable`].
pub async fn dumped_table_count(client: &tokio_postgres::Client) -> Result<u64, PgError> {
    let n: i64 = client
        .query_one(&format!("select count(*) from ({TABLES_SQL}) t"), &[])
        .await
        .map_err(|e| PgError::query("counting tables", e))?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A failed count, with the server's hint kept: "out of shared memory" is the lock table
/// filling up (the counting locks every table in one transaction), and the server's own
/// hint (raise `max_locks_per_transaction`) is the next step.
fn counting_failed(e: tokio_postgres::Error, tables: usize) -> PgError {
    let server_hint = e.as_db_error().and_then(|d| d.hint()).map(str::to_string);
    let out_of_locks = e
        .as_db_error()
        .is_some_and(|d| d.message().contains("out of shared memory"));
    let mut hints = Vec::new();
    if let Some(h) = server_hint {
        hints.push(format!("{h} (the server's hint)"));
    }
    if out_of_locks {
        hints.push(format!(
            "a backup locks each of the database's {tables} tables in one transaction (twice at once, with pg_dump): raise max_locks_per_transaction in postgresql.conf and restart the server; `dr check` says whether the lock table is big enough"
        ));
    }
    PgError::Query {
        what: "counting rows".into(),
        detail: crate::error::describe(&e),
        hint: (!hints.is_empty()).then(|| hints.join("; ")),
        transient: crate::error::transient(&e),
    }
}

const SEQUENCES_SQL: &str = "
select n.nspname::text, c.relname::text
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'S'
  and n.nspname not in ('pg_catalog', 'information_schema')
  and not exists (select 1 from pg_depend d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
order by 1, 2";

const OWNERS_SQL: &str = "
select distinct pg_get_userbyid(o)::text from (
  select c.relowner as o from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'
  union select nspowner from pg_namespace
   where nspname not in ('pg_catalog', 'information_schema') and nspname not like 'pg\\_%'
) x order by 1";

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Snapshot {
    /// Connect, open the transaction and export its snapshot. Counting waits at most
    /// `lock_wait` for a table lock (0: forever), like `pg_dump --lock-wait-timeout`.
    /// With `import`, the transaction runs in that exported snapshot (a replication slot's,
    /// [`crate::slot_snapshot`]) and exports it again: held here, it outlives its exporter.
    pub async fn begin(
        conn: &ConnInfo,
        lock_wait: std::time::Duration,
        import: Option<&str>,
    ) -> Result<Snapshot, PgError> {
        let client = conn.connect().await?;
        // SET TRANSACTION SNAPSHOT must come before the transaction's first query.
        let imported = import
            .map(|id| format!("; set transaction snapshot '{}'", id.replace('\'', "''")))
            .unwrap_or_default();
        client
            .batch_execute(&format!(
                "begin isolation level repeatable read read only{imported}; set local lock_timeout = {}",
                lock_wait.as_millis()
            ))
            .await
            .map_err(|e| PgError::query("opening the snapshot transaction", e))?;
        let row = client
            .query_one("select pg_export_snapshot(), pg_backend_pid()", &[])
            .await
            .map_err(|e| PgError::query("exporting the snapshot", e))?;
        Ok(Snapshot {
            id: row.get(0),
            backend_pid: row.get(1),
            client,
        })
    }

    /// The id to pass to `pg_dump --snapshot`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The data section's tables with their sizes, as pg_dump in this snapshot will see
    /// them: what [`crate::split_data`] splits into streams. Run it before
    /// [`Snapshot::inventory`] (one connection, one query at a time).
    pub async fn table_sizes(&self) -> Result<Vec<crate::TableSize>, PgError> {
        crate::split::table_sizes(&self.client).await
    }

    /// Exact counts and the rest of the inventory, in the snapshot.
    pub async fn inventory(&self) -> Result<Inventory, PgError> {
        let mut inventory = Inventory {
            database: self.database().await?,
            tables: self.count_rows().await?,
            ..Inventory::default()
        };
        self.add_the_rest(&mut inventory).await?;
        Ok(inventory)
    }

    async fn database(&self) -> Result<String, PgError> {
        Ok(self
            .client
            .query_one("select current_database()::text", &[])
            .await
            .map_err(|e| PgError::query("reading the database name", e))?
            .get(0))
    }

    /// The inventory without the counting (every table's `rows` is 0): what a restore
    /// checks before it starts, the counts following with [`Snapshot::count_rows`].
    pub async fn outline(&self) -> Result<Inventory, PgError> {
        let database = self.database().await?;
        let mut tables: Vec<TableRows> = list_tables(&self.client)
            .await?
            .into_iter()
            .map(|(schema, name)| TableRows {
                schema,
                name,
                rows: 0,
            })
            .collect();
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        let mut inventory = Inventory {
            database,
            tables,
            ..Inventory::default()
        };
        self.add_the_rest(&mut inventory).await?;
        Ok(inventory)
    }

    /// Exact `count(*) FROM ONLY` of every table pg_dump copies, in the snapshot, in name
    /// order.
    pub async fn count_rows(&self) -> Result<Vec<TableRows>, PgError> {
        let c = &self.client;
        let names = list_tables(c).await?;
        let mut tables = Vec::with_capacity(names.len());
        // Batches keep statements short while avoiding one round trip per table.
        for chunk in names.chunks(100) {
            let sql = chunk
                .iter()
                .enumerate()
                .map(|(i, (s, t))| {
                    format!(
                        "select {i} as i, count(*) as n from only {}.{}",
                        quote_ident(s),
                        quote_ident(t)
                    )
                })
                .collect::<Vec<_>>()
                .join(" union all ");
            let rows = c
                .query(&sql, &[])
                .await
                .map_err(|e| counting_failed(e, names.len()))?;
            let mut counts = vec![0i64; chunk.len()];
            for r in rows {
                let i: i32 = r.get(0);
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| counts.get_mut(i)) {
                    *slot = r.get(1);
                }
            }
            for ((s, t), n) in chunk.iter().zip(counts) {
                tables.push(TableRows {
                    schema: s.clone(),
                    name: t.clone(),
                    rows: n,
                });
            }
        }
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        Ok(tables)
    }

    /// Sequences with their values, large objects, extensions, owners.
    async fn add_the_rest(&self, inventory: &mut Inventory) -> Result<(), PgError> {
        let c = &self.client;
        let seqs: Vec<(String, String)> = c
            .query(SEQUENCES_SQL, &[])
            .await
            .map_err(|e| PgError::query("listing sequences", e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut sequences = Vec::with_capacity(seqs.len());
        for (s, n) in seqs {
            let sql = format!(
                "select last_value, is_called from {}.{}",
                quote_ident(&s),
                quote_ident(&n)
            );
            match c.query_one(&sql, &[]).await {
                Ok(r) => sequences.push(SequenceState {
                    schema: s,
                    name: n,
                    last_value: r.get(0),
                    is_called: r.get(1),
                }),
                // No SELECT privilege on one sequence must not fail the backup: pg_dump would
                // have failed first if it mattered.
                Err(e) => tracing::warn!("cannot read sequence {s}.{n}: {e}"),
            }
        }
        let large_objects: i64 = c
            .query_one("select count(*) from pg_largeobject_metadata", &[])
            .await
            .map_err(|e| PgError::query("counting large objects", e))?
            .get(0);
        let extensions = c
            .query(
                "select extname::text from pg_extension where extname <> 'plpgsql' order by 1",
                &[],
            )
            .await
            .map_err(|e| PgError::query("listing extensions", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let owners = c
            .query(OWNERS_SQL, &[])
            .await
            .map_err(|e| PgError::query("listing owners", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        inventory.sequences = sequences;
        inventory.large_objects = u64::try_from(large_objects).unwrap_or(0);
        inventory.extensions = extensions;
        inventory.owners = owners;
        Ok(())
    }

    /// End the transaction (after pg_dump exited).
    pub async fn finish(self) {
        let _ = self.client.batch_execute("rollback").await;
    }

    /// Give up on the snapshot while a query may still run in it (a count waiting for a
    /// lock): end its server session from another connection, so nothing of this run stays
    /// queued on the server, then drop the connection.
    pub async fn abandon(self, conn: &ConnInfo) {
        let ended = async {
            let admin = conn.connect().await?;
            admin
                .execute("select pg_terminate_backend($1)", &[&self.backend_pid])
                .await
                .map_err(|e| PgError::query("ending the snapshot session", e))
        };
        if let Err(e) = tokio::time::timeout(std::time::Duration::from_secs(30), ended)
            .await
            .unwrap_or_else(|_| {
                Err(PgError::Query {
                    what: "ending the snapshot session".into(),
                    detail: "timed out".into(),
                    hint: None,
                    transient: true,
                })
            })
        {
            tracing::warn!(
                "could not end the snapshot session (pid {}): {e}",
                self.backend_pid
            );
        }
    }
}

/// Exact counts of the current state of a database (restore summary, verification).
pub async fn count_tables(client: &tokio_postgres::Client) -> Result<Vec<TableRows>, PgError> {
    let mut names = list_tables(client).await?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for (schema, name) in names {
        out.push(count_one(client, schema, name).await?);
    }
    Ok(out)
}

/// `count(*) FROM ONLY` one table: the rows pg_dump copies for it (no inheritance children).
async fn count_one(
    client: &tokio_postgres::Client,
    schema: String,
    name: String,
) -> Result<TableRows, PgError> {
    let sql = format!(
        "select count(*) from only {}.{}",
        quote_ident(&schema),
        quote_ident(&name)
    );
    let rows: i64 = client
        .query_one(&sql, &[])
        .await
        .map_err(|e| PgError::query(&format!("counting rows of {schema}.{name}"), e))?
        .get(0);
    Ok(TableRows { schema, name, rows })
}

/// Exact counts like [`count_tables`], on `jobs` connections at once, largest tables first:
/// after a parallel restore the counting should not take longer than it must.
pub async fn count_tables_parallel(
    conn: &ConnInfo,
    jobs: usize,
) -> Result<Vec<TableRows>, PgError> {
    let first = conn.connect().await?;
    let names = list_tables(&first).await?;
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        names.into_iter().collect::<std::collections::VecDeque<_>>(),
    ));
    let mut clients = vec![first];
    for _ in 1..jobs.max(1) {
        clients.push(conn.connect().await?);
    }
    let mut tasks = Vec::new();
    for client in clients {
        let queue = std::sync::Arc::clone(&queue);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((schema, name)) = next else { break };
                out.push(count_one(&client, schema, name).await?);
            }
            Ok::<_, PgError>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => all.extend(r?),
            Err(e) => {
                return Err(PgError::Query {
                    what: "counting rows".into(),
                    detail: e.to_string(),
                    hint: None,
                    transient: false,
                })
            }
        }
    }
    all.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(all)
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
