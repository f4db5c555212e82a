//! What verify asks a restored database beyond its row counts: each sequence's state, whether
//! a sequence is behind the column it feeds, how many large objects it holds, and the
//! operator's own assertions (`[[verify.assert]]`).

use tokio_postgres::Client;

use crate::{describe, quote_ident, PgError};

/// `select last_value, is_called from SCHEMA.NAME`.
pub fn sequence_statement(schema: &str, name: &str) -> String {
    format!(
        "select last_value, is_called from {}.{}",
        quote_ident(schema),
        quote_ident(name)
    )
}

/// The sequence `schema.name`'s `last_value` and `is_called`.
pub async fn sequence_state(
    client: &Client,
    schema: &str,
    name: &str,
) -> Result<(i64, bool), PgError> {
    let r = client
        .query_one(&sequence_statement(schema, name), &[])
        .await
        .map_err(|e| PgError::query(&format!("reading sequence {schema}.{name}"), e))?;
    Ok((r.get(0), r.get(1)))
}

/// A sequence owned by a table's column (`serial`, identity): the column's values come from
/// it. Each name is quoted where needed (`format('%I.%I')`, `quote_ident`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSequence {
    pub sequence: String,
    pub table: String,
    pub column: String,
}

/// Every sequence of `client`'s database that a table's column owns.
pub async fn owned_sequences(client: &Client) -> Result<Vec<OwnedSequence>, PgError> {
    let rows = client
        .query(
            "select format('%I.%I', sn.nspname, s.relname), format('%I.%I', tn.nspname, t.relname), quote_ident(a.attname)
             from pg_class s
             join pg_namespace sn on sn.oid = s.relnamespace
             join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass
                  and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
             join pg_class t on t.oid = d.refobjid
             join pg_namespace tn on tn.oid = t.relnamespace
             join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
             where s.relkind = 'S' and t.relkind in ('r', 'p')",
            &[],
        )
        .await
        .map_err(|e| PgError::query("listing owned sequences", e))?;
    Ok(rows
        .iter()
        .map(|r| OwnedSequence {
            sequence: r.get(0),
            table: r.get(1),
            column: r.get(2),
        })
        .collect())
}

/// True when the next value `s` gives is above every value its column holds (the next
/// insert does not collide).
pub fn not_behind_statement(s: &OwnedSequence) -> String {
    let OwnedSequence {
        sequence,
        table,
        column,
    } = s;
    format!(
        "select (select case when is_called then last_value else last_value - 1 end from {sequence})::numeric >= coalesce((select max({column})::numeric from {table}), 0)"
    )
}

/// Whether `s` is not behind its column ([`not_behind_statement`]).
pub async fn sequence_not_behind(client: &Client, s: &OwnedSequence) -> Result<bool, PgError> {
    let what = || {
        format!(
            "comparing sequence {} with {}.{}",
            s.sequence, s.table, s.column
        )
    };
    let r = client
        .query_one(&not_behind_statement(s), &[])
        .await
        .map_err(|e| PgError::query(&what(), e))?;
    r.try_get::<_, bool>(0)
        .map_err(|e| PgError::query(&what(), e))
}

/// How many large objects `client`'s database holds.
pub async fn large_object_count(client: &Client) -> Result<i64, PgError> {
    Ok(client
        .query_one("select count(*) from pg_largeobject_metadata", &[])
        .await
        .map_err(|e| PgError::query("counting large objects", e))?
        .get(0))
}

/// What an operator's assertion answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Boolean(bool),
    /// Its first column is not a boolean: why (the driver's words).
    NotBoolean(String),
}

/// Runs the operator's `sql` (a `[[verify.assert]]`) and reads its first column.
pub async fn assertion(client: &Client, sql: &str) -> Result<Answer, PgError> {
    let r = client
        .query_one(sql, &[])
        .await
        .map_err(|e| PgError::query("running the assertion", e))?;
    Ok(match r.try_get::<_, bool>(0) {
        Ok(b) => Answer::Boolean(b),
        Err(e) => Answer::NotBoolean(describe(&e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_is_read_by_its_quoted_name() {
        assert_eq!(
            sequence_statement("public", "Order\"s_id_seq"),
            r#"select last_value, is_called from "public"."Order""s_id_seq""#
        );
    }

    #[test]
    fn not_behind_compares_the_next_value_with_the_column_max() {
        let s = OwnedSequence {
            sequence: "public.t_id_seq".into(),
            table: "public.t".into(),
            column: "id".into(),
        };
        assert_eq!(
            not_behind_statement(&s),
            "select (select case when is_called then last_value else last_value - 1 end from public.t_id_seq)::numeric >= coalesce((select max(id)::numeric from public.t), 0)"
        );
    }
}
