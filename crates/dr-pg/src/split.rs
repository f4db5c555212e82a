//! Splitting a database's data section into parallel `pg_dump --section=data` streams.
//!
//! Every table whose rows pg_dump copies is assigned, largest first, to the stream with the
//! fewest bytes so far (partitions and inheritance children are tables of their own, so a big
//! partitioned table spreads). Stream 1 is dumped with `-T` for every table of the other
//! streams: it carries its own tables *and everything nobody listed* — large objects (`-b`),
//! sequence values, data of extension configuration tables, anything a newer pg_dump adds —
//! so nothing can fall between the streams. Streams 2.. are dumped with `-t` for exactly their
//! tables (`--strict-names`: a name that matches nothing fails the dump instead of silently
//! dumping less).
//!
//! A sequence owned by a table (serial, identity) follows its table: pg_dump dumps it with the
//! table whatever the patterns say, so stream 1 also excludes the owned sequences of the
//! other streams' tables. Every sequence value is thus in exactly one stream.
//!
//! Names are passed as quoted patterns (`"schema"."table"`): inside double quotes pg_dump
//! matches literally, so dots, capitals, `*` and `?` in names mean themselves.

use serde::{Deserialize, Serialize};

use crate::dumped::dumped_tables_where;
use crate::PgError;

/// Above this many tables the data section is not split (see [`split_data`]).
pub const MAX_SPLIT_TABLES: usize = 10_000;

/// A table of the data section with its size and the sequences it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSize {
    pub schema: String,
    pub name: String,
    /// Heap and TOAST pages as of the last VACUUM/ANALYZE (`relpages`), in bytes: what its
    /// COPY has to read, near enough to balance streams. Read from the catalog alone:
    /// `pg_table_size` would lock the table, and a table locked by a migration must make the
    /// backup wait in pg_dump (bounded by `--lock-wait-timeout`), not in planning.
    pub bytes: u64,
    /// Sequences owned by this table (serial and identity columns), as (schema, name).
    pub owned_sequences: Vec<(String, String)>,
}

/// One data stream: the tables whose rows it carries (stream 1 carries the rest, too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataStream {
    /// 1-based.
    pub number: u32,
    pub tables: Vec<(String, String)>,
    pub bytes: u64,
}

/// The data section split into streams, and the pg_dump arguments of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSplit {
    pub streams: Vec<DataStream>,
    /// Owned sequences of each stream's tables, by stream index (stream 1 excludes the others').
    owned: Vec<Vec<(String, String)>>,
}

/// Split `tables` into at most `streams` streams (at least one; never more streams than
/// tables, since an empty `-t` stream would dump everything).
pub fn split_data(tables: &[TableSize], streams: u32) -> DataSplit {
    let mut n = usize::try_from(streams.max(1))
        .unwrap_or(1)
        .min(tables.len().max(1));
    // Each table of streams 2.. is one pg_dump argument (twice: -t in its stream, -T in
    // stream 1); past this many tables the command lines would near the kernel's limit
    // (E2BIG), so the data section stays one stream.
    if n > 1 && tables.len() > MAX_SPLIT_TABLES {
        tracing::warn!(
            tables = tables.len(),
            "more than {MAX_SPLIT_TABLES} tables: the data section is dumped as one stream"
        );
        n = 1;
    }
    let mut order: Vec<&TableSize> = tables.iter().collect();
    // Largest first; names break ties so the split is the same for the same sizes.
    order.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)))
    });
    let mut out: Vec<DataStream> = (1..=n)
        .map(|k| DataStream {
            number: u32::try_from(k).unwrap_or(u32::MAX),
            tables: Vec::new(),
            bytes: 0,
        })
        .collect();
    let mut owned: Vec<Vec<(String, String)>> = vec![Vec::new(); n];
    // What balances the streams: a table never vacuumed or analyzed reads as 0 bytes and
    // counts as 1, so tables of unknown size still spread instead of piling onto stream 1.
    let mut load = vec![0u64; n];
    for t in order {
        // The least-loaded stream; the first of equals, so stream 1 is never left empty.
        let i = (0..n).min_by_key(|&i| (load[i], i)).unwrap_or(0);
        load[i] = load[i].saturating_add(t.bytes.max(1));
        out[i].tables.push((t.schema.clone(), t.name.clone()));
        out[i].bytes = out[i].bytes.saturating_add(t.bytes);
        owned[i].extend(t.owned_sequences.iter().cloned());
    }
    DataSplit {
        streams: out,
        owned,
    }
}

/// `"schema"."name"`: a pg_dump pattern that matches exactly this name.
pub fn exact_pattern(schema: &str, name: &str) -> String {
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        name.replace('"', "\"\"")
    )
}

impl DataSplit {
    /// The stream of a table (1-based), if it was assigned one.
    pub fn stream_of(&self, schema: &str, name: &str) -> Option<u32> {
        self.streams
            .iter()
            .find(|s| s.tables.iter().any(|(a, b)| a == schema && b == name))
            .map(|s| s.number)
    }

    /// The selection arguments of stream `number` for `pg_dump --section=data`.
    pub fn pg_dump_args(&self, number: u32) -> Vec<String> {
        let Some(i) = self.streams.iter().position(|s| s.number == number) else {
            return Vec::new();
        };
        let mut args = Vec::new();
        if i == 0 {
            // The rest: everything but the other streams' tables and their sequences.
            args.push("-b".to_string());
            for (j, s) in self.streams.iter().enumerate().skip(1) {
                for (schema, name) in s.tables.iter().chain(self.owned[j].iter()) {
                    args.push(format!("--exclude-table={}", exact_pattern(schema, name)));
                }
            }
        } else {
            args.push("--strict-names".to_string());
            for (schema, name) in &self.streams[i].tables {
                args.push(format!("--table={}", exact_pattern(schema, name)));
            }
        }
        args
    }
}

/// Tables of the data section with their sizes and owned sequences, as the transaction on
/// `client` sees them (run it in the backup's snapshot: the names must be the ones pg_dump
/// will find). The same tables [`crate::Snapshot::inventory`] counts.
pub async fn table_sizes(client: &tokio_postgres::Client) -> Result<Vec<TableSize>, PgError> {
    let rows = client
        .query(
            concat!(
                "select n.nspname::text, c.relname::text,
       ((c.relpages::bigint + coalesce(t.relpages, 0)) * current_setting('block_size')::bigint),
       coalesce(o.schemas, '{}'), coalesce(o.names, '{}')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
left join pg_class t on t.oid = c.reltoastrelid
left join lateral (
  select array_agg(sn.nspname::text order by s.relname) as schemas,
         array_agg(s.relname::text order by s.relname) as names
  from pg_depend d
  join pg_class s on s.oid = d.objid and s.relkind = 'S'
  join pg_namespace sn on sn.oid = s.relnamespace
  where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass
    and d.refobjid = c.oid and d.deptype in ('a', 'i')) o on true
",
                dumped_tables_where!(),
                "order by 3 desc, 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::query("listing tables and their sizes", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let schemas: Vec<String> = r.get(3);
            let names: Vec<String> = r.get(4);
            TableSize {
                schema: r.get(0),
                name: r.get(1),
                bytes: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                owned_sequences: schemas.into_iter().zip(names).collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: &str, name: &str, bytes: u64) -> TableSize {
        TableSize {
            schema: schema.into(),
            name: name.into(),
            bytes,
            owned_sequences: Vec::new(),
        }
    }

    #[test]
    fn largest_first_to_the_least_loaded_stream() {
        let tables = [
            t("public", "a", 100),
            t("public", "b", 60),
            t("public", "c", 50),
            t("public", "d", 10),
            t("public", "e", 0),
        ];
        let s = split_data(&tables, 3);
        let names = |k: usize| -> Vec<&str> {
            s.streams[k]
                .tables
                .iter()
                .map(|(_, n)| n.as_str())
                .collect()
        };
        assert_eq!(names(0), ["a"]);
        assert_eq!(names(1), ["b", "e"]);
        assert_eq!(names(2), ["c", "d"]);
        assert_eq!(s.stream_of("public", "d"), Some(3));
        assert_eq!(s.stream_of("public", "zz"), None);
    }

    #[test]
    fn very_many_tables_stay_one_stream() {
        let tables: Vec<_> = (0..=MAX_SPLIT_TABLES)
            .map(|i| t("public", &format!("t{i}"), 1))
            .collect();
        let s = split_data(&tables, 4);
        assert_eq!(s.streams.len(), 1);
        assert_eq!(s.pg_dump_args(1), ["-b"]);
    }

    #[test]
    fn tables_of_unknown_size_spread_too() {
        let tables = [
            t("public", "a", 0),
            t("public", "b", 0),
            t("public", "c", 0),
        ];
        let s = split_data(&tables, 3);
        assert!(s.streams.iter().all(|s| s.tables.len() == 1), "{s:?}");
    }

    #[test]
    fn never_more_streams_than_tables_and_always_one() {
        assert_eq!(split_data(&[t("public", "a", 1)], 4).streams.len(), 1);
        let none = split_data(&[], 4);
        assert_eq!(none.streams.len(), 1);
        // The only stream is "the rest": everything, large objects included.
        assert_eq!(none.pg_dump_args(1), ["-b"]);
        assert_eq!(split_data(&[t("public", "a", 1)], 0).streams.len(), 1);
    }

    #[test]
    fn stream_one_excludes_the_others_and_their_owned_sequences() {
        let mut big = t("Sales Data", "Order \"Items\"", 100);
        big.owned_sequences = vec![("Sales Data".into(), "Order Items_id_seq".into())];
        let tables = [big, t("public", "small", 1)];
        let s = split_data(&tables, 2);
        assert_eq!(s.stream_of("Sales Data", "Order \"Items\""), Some(1));
        assert_eq!(
            s.pg_dump_args(2),
            ["--strict-names", "--table=\"public\".\"small\""]
        );
        assert_eq!(
            s.pg_dump_args(1),
            ["-b", "--exclude-table=\"public\".\"small\""]
        );
        // The other way round: stream 1 leaves out the big table's sequence too.
        let s = split_data(&[t("public", "x", 500), tables[0].clone()], 2);
        assert_eq!(
            s.pg_dump_args(1),
            [
                "-b",
                "--exclude-table=\"Sales Data\".\"Order \"\"Items\"\"\"",
                "--exclude-table=\"Sales Data\".\"Order Items_id_seq\"",
            ]
        );
        assert!(s.pg_dump_args(9).is_empty());
    }
}
