//! `--clean` over an existing database: what must go before the backup's objects can be
//! dropped and recreated.

use dr_catalog::BackupDetails;
use dr_pg::ConnInfo;

use crate::{Error, Result};

/// `--clean` restores the pre-data section alone, whose table of contents has no foreign
/// keys (post-data) to order the DROPs by: a table another table references cannot be
/// dropped. So first drop every foreign key that references a table the backup replaces
/// (or its partitioned parents); the post-data step recreates the backup's own.
pub(super) async fn drop_foreign_keys_to_replaced(
    conn: &ConnInfo,
    details: &BackupDetails,
) -> Result<()> {
    let client = conn.connect().await?;
    let tables: Vec<(String, String)> = details
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let keys = dr_pg::target::foreign_keys_to(&client, &tables)
        .await
        .map_err(|e| {
            Error::from(e).context(format!(
                "listing the foreign keys to the tables --clean replaces in {conn}"
            ))
        })?;
    for fk in keys {
        let (name, on, to) = (&fk.name, &fk.on, &fk.references);
        tracing::warn!(
            "--clean: dropping foreign key {name} on {on} (it references {to}, which the backup replaces); the backup's own foreign keys are recreated after the data"
        );
        dr_pg::target::drop_foreign_key(&client, &fk)
            .await
            .map_err(|e| {
                Error::from(e).context(format!(
                    "--clean: dropping foreign key {name} on {on} in {conn}"
                ))
            })?;
    }
    Ok(())
}
