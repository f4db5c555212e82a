//! `--clean` over an existing database: what must go before the backup's objects can be
//! dropped and recreated.

use dr_catalog::BackupDetails;
use dr_pg::ConnInfo;

use crate::{Error, Kind, Result};

/// `--clean` restores the pre-data section alone, whose table of contents has no foreign
/// keys (post-data) to order the DROPs by: a table another table references cannot be
/// dropped. So first drop every foreign key that references a table the backup replaces
/// (or its partitioned parents); the post-data step recreates the backup's own.
pub(super) async fn drop_foreign_keys_to_replaced(
    conn: &ConnInfo,
    details: &BackupDetails,
) -> Result<()> {
    let client = conn.connect().await?;
    let schemas: Vec<String> = details.tables.iter().map(|t| t.schema.clone()).collect();
    let names: Vec<String> = details.tables.iter().map(|t| t.name.clone()).collect();
    let rows = client
        .query(
            "with replaced as (
                 select c.oid from pg_class c
                 join pg_namespace n on n.oid = c.relnamespace
                 join unnest($1::text[], $2::text[]) as u(s, r) on u.s = n.nspname and u.r = c.relname
             ), targets as (
                 select oid from replaced
                 union
                 select a.relid from replaced, lateral pg_partition_ancestors(replaced.oid) a
             )
             select format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', con.conrelid::regclass, con.conname),
                    con.conname::text, con.conrelid::regclass::text, con.confrelid::regclass::text
             from pg_constraint con
             where con.contype = 'f' and con.conparentid = 0
               and con.confrelid in (select oid from targets)
             order by 1",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("listing the foreign keys to the tables --clean replaces in {conn}: {e}"),
            )
        })?;
    for r in rows {
        let (sql, name, on, to): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        tracing::warn!(
            "--clean: dropping foreign key {name} on {on} (it references {to}, which the backup replaces); the backup's own foreign keys are recreated after the data"
        );
        client.batch_execute(&sql).await.map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("--clean: dropping foreign key {name} on {on} in {conn}: {e}"),
            )
        })?;
    }
    Ok(())
}
