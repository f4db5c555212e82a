//! The database a restore writes into, as its server sees it: whether it exists and holds
//! objects, the roles of the server, creating and dropping it, and the foreign keys `--clean`
//! must drop before it can replace the tables they reference.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::{quote_ident, PgError};

/// Whether the server `admin` is connected to has a database named `name`.
pub async fn database_exists(admin: &Client, name: &str) -> Result<bool, PgError> {
    Ok(admin
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await
        .map_err(|e| PgError::query("looking the database up in pg_database", e))?
        .is_some())
}

/// What a database holds beyond what every new one has: relations and schemas outside the
/// system ones, extensions other than plpgsql, large objects. Counted in the database
/// `client` is connected to; 0 means a restore into it writes into nothing.
pub async fn user_object_count(client: &Client) -> Result<i64, PgError> {
    Ok(client
        .query_one(
            "select (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                      where n.nspname not in ('pg_catalog','information_schema')
                        and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%')
                  + (select count(*) from pg_namespace where nspname not in ('pg_catalog','information_schema','public')
                        and nspname not like 'pg\\_%')
                  + (select count(*) from pg_extension where extname <> 'plpgsql')
                  + (select count(*) from pg_largeobject_metadata)",
            &[],
        )
        .await
        .map_err(|e| PgError::query("counting the database's objects", e))?
        .get(0))
}

/// The names of every role of the server `admin` is connected to.
pub async fn role_names(admin: &Client) -> Result<BTreeSet<String>, PgError> {
    Ok(admin
        .query("select rolname::text from pg_roles", &[])
        .await
        .map_err(|e| PgError::query("reading pg_roles", e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// `create database NAME template template0`: from template0, as the archive brings
/// everything (encoding and locale are the server's defaults).
pub fn create_database_statement(name: &str) -> String {
    format!("create database {} template template0", quote_ident(name))
}

/// `drop database if exists NAME`, with `(force)` from PostgreSQL 13 on (sessions still
/// connected, e.g. a stopped restore's, would make it fail).
pub fn drop_database_statement(name: &str, major: u32) -> String {
    let force = if major >= 13 { " with (force)" } else { "" };
    format!("drop database if exists {}{force}", quote_ident(name))
}

/// `DROP DATABASE NAME;`: for the operator to run by hand (in a hint) when dr could not.
pub fn drop_database_by_hand(name: &str) -> String {
    format!("DROP DATABASE {};", quote_ident(name))
}

/// Creates the database `name` ([`create_database_statement`]); the server's message when
/// it cannot.
pub async fn create_database(admin: &Client, name: &str) -> Result<(), PgError> {
    admin
        .batch_execute(&create_database_statement(name))
        .await
        .map_err(|e| PgError::query(&format!("creating database {name}"), e))
}

/// Drops the database `name` if it exists ([`drop_database_statement`] for a server of
/// `major`); the server's message when it cannot.
pub async fn drop_database(admin: &Client, name: &str, major: u32) -> Result<(), PgError> {
    let sql = drop_database_statement(name, major);
    admin
        .batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(&format!("running `{sql}`"), e))
}

/// A foreign key (one not inherited from a partitioned parent) that references a table
/// `--clean` replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    /// The table holding it (`regclass` text: quoted where needed).
    pub on: String,
    /// The table it references.
    pub references: String,
    /// `ALTER TABLE … DROP CONSTRAINT IF EXISTS …`.
    drop: String,
}

/// The foreign keys in `client`'s database that reference one of `tables` (schema, name)
/// or a partitioned parent of one, in the order of their DROP statements.
pub async fn foreign_keys_to(
    client: &Client,
    tables: &[(String, String)],
) -> Result<Vec<ForeignKey>, PgError> {
    let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|(_, n)| n.as_str()).collect();
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
        .map_err(|e| PgError::query("reading pg_constraint", e))?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            drop: r.get(0),
            name: r.get(1),
            on: r.get(2),
            references: r.get(3),
        })
        .collect())
}

/// Drops `fk` (if it is still there).
pub async fn drop_foreign_key(client: &Client, fk: &ForeignKey) -> Result<(), PgError> {
    client
        .batch_execute(&fk.drop)
        .await
        .map_err(|e| PgError::query(&format!("running `{}`", fk.drop), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_quotes_the_name_and_starts_from_template0() {
        assert_eq!(
            create_database_statement("app"),
            r#"create database "app" template template0"#
        );
        assert_eq!(
            create_database_statement(r#"we"ird db"#),
            r#"create database "we""ird db" template template0"#
        );
    }

    #[test]
    fn drop_forces_from_postgresql_13() {
        assert_eq!(
            drop_database_statement("app", 12),
            r#"drop database if exists "app""#
        );
        assert_eq!(
            drop_database_statement("app", 13),
            r#"drop database if exists "app" with (force)"#
        );
        assert_eq!(
            drop_database_statement(r#"a"b"#, 17),
            r#"drop database if exists "a""b" with (force)"#
        );
        assert_eq!(drop_database_by_hand("app"), r#"DROP DATABASE "app";"#);
    }
}
