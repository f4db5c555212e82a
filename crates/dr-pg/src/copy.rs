//! Rows carried between two servers by COPY, without pg_dump's archive in between: a table's
//! rows (or a block range of them) read with `COPY … TO STDOUT` in an exported snapshot and
//! written with `COPY … FROM STDIN`, counted as they pass.
//!
//! What pg_dump and pg_restore would do, done here too:
//! - the same tables ([`crate::Snapshot::outline`]'s: ordinary tables and partitions, not an
//!   extension's) and the same columns (neither dropped nor generated, in column order);
//! - each side's session settings as pg_restore's `_doSetFixedOutputState` and pg_dump's
//!   `setup_connection` set them: no statement, lock, idle or transaction timeout (a role's
//!   `statement_timeout` must not end a long COPY), `row_security = off` (rows hidden by a
//!   policy fail the COPY instead of going missing), ISO dates, `postgres` intervals,
//!   `extra_float_digits = 3`, an empty `search_path`;
//! - UTF-8 on both sides, as dr's pg_dump (`--encoding=UTF8`) and pg_restore speak.
//!
//! In COPY's text format a row ends with a newline and a newline inside a value is written
//! `\n`: the newlines read are the rows read, compared with the count the destination's COPY
//! reports.

use std::pin::pin;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::dumped::dumped_tables_where;
use crate::snapshot::quote_ident;
use crate::{ConnInfo, PgError, Snapshot};

/// A table whose rows are copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTable {
    pub schema: String,
    pub name: String,
    /// Quoted, in column order: the columns COPY carries.
    pub columns: Vec<String>,
    /// Heap blocks (`pg_relation_size`): where a range split cuts.
    pub blocks: u64,
    /// Heap and TOAST bytes: what the copy reads, for the order of the work.
    pub bytes: u64,
}

impl CopyTable {
    fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    fn column_list(&self) -> String {
        if self.columns.is_empty() {
            // No column COPY can carry (none, or only generated ones): COPY's default list
            // is then the same empty one.
            String::new()
        } else {
            format!(" ({})", self.columns.join(", "))
        }
    }
}

/// One COPY: a whole table, or the rows of its heap blocks `from..to` (open at either end,
/// so a table grown since its size was read is still copied whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index into the tables the pieces were made of.
    pub table: usize,
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// Bytes it reads, near enough: the largest go first.
    pub bytes: u64,
}

impl Piece {
    /// A whole table, not a block range of it.
    pub fn is_whole(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

/// A piece is not cut smaller than this many blocks (128 MiB of 8 kB blocks): each piece is
/// one statement on each side.
const MIN_PIECE_BLOCKS: u64 = 16_384;

/// The oldest server whose rows are copied: block-range (TID range) scans, to cut a table by,
/// came with PostgreSQL 14.
pub const MIN_MAJOR: u32 = 14;

/// The tables whose rows pg_dump would copy, with what COPY carries of each, as `snapshot`
/// sees them; `None` before [`MIN_MAJOR`].
pub async fn copy_tables(snapshot: &Snapshot) -> Result<Option<Vec<CopyTable>>, PgError> {
    let client = &snapshot.client;
    if crate::ServerVersion::query(client).await?.major < MIN_MAJOR {
        return Ok(None);
    }
    let rows = client
        .query(
            concat!(
                "select n.nspname::text, c.relname::text,
       coalesce((select array_agg(quote_ident(a.attname) order by a.attnum)
                 from pg_attribute a
                 where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                   and a.attgenerated = ''), '{}'),
       pg_relation_size(c.oid) / current_setting('block_size')::bigint,
       pg_table_size(c.oid)
from pg_class c join pg_namespace n on n.oid = c.relnamespace",
                dumped_tables_where!(),
                "order by 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::query("listing the tables and columns to copy", e))?;
    Ok(Some(
        rows.iter()
            .map(|r| CopyTable {
                schema: r.get(0),
                name: r.get(1),
                columns: r.get(2),
                blocks: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                bytes: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            })
            .collect(),
    ))
}

/// The COPYs that carry `tables` with `workers` at once, largest first. With `cut`, a table
/// larger than a fair share (a quarter of one worker's, at least [`MIN_PIECE_BLOCKS`]) is
/// cut into block ranges, so one big table keeps every worker busy; without, every table is
/// one piece (as [`Freeze::Yes`] needs).
pub fn pieces(tables: &[CopyTable], workers: u32, cut: bool) -> Vec<Piece> {
    let total: u64 = tables.iter().map(|t| t.blocks).sum();
    let share = total / (u64::from(workers.max(1)) * 4);
    let chunk = if cut {
        share.max(MIN_PIECE_BLOCKS)
    } else {
        u64::MAX
    };
    let mut out = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let n = t.blocks.div_ceil(chunk).max(1);
        if n == 1 {
            out.push(Piece {
                table: i,
                from: None,
                to: None,
                bytes: t.bytes,
            });
            continue;
        }
        let cut = |k: u64| t.blocks * k / n;
        for k in 0..n {
            out.push(Piece {
                table: i,
                from: (k > 0).then(|| cut(k)),
                to: (k + 1 < n).then(|| cut(k + 1)),
                bytes: t.bytes / n,
            });
        }
    }
    out.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| (a.table, a.from).cmp(&(b.table, b.from)))
    });
    out
}

/// The statement that reads `piece` of `table`.
fn copy_out_sql(table: &CopyTable, piece: &Piece) -> String {
    if piece.is_whole() {
        // COPY of a table reads that table's rows only, not its inheritance children's.
        return format!(
            "copy {}{} to stdout",
            table.qualified(),
            table.column_list()
        );
    }
    let mut bounds = Vec::new();
    if let Some(f) = piece.from {
        bounds.push(format!("ctid >= '({f},0)'::tid"));
    }
    if let Some(t) = piece.to {
        bounds.push(format!("ctid < '({t},0)'::tid"));
    }
    format!(
        "copy (select {} from only {} where {}) to stdout",
        table.columns.join(", "),
        table.qualified(),
        bounds.join(" and ")
    )
}

fn copy_in_sql(table: &CopyTable, freeze: bool) -> String {
    format!(
        "copy {}{} from stdin{}",
        table.qualified(),
        table.column_list(),
        if freeze { " freeze" } else { "" }
    )
}

/// Whether a whole table's rows are written frozen: `TRUNCATE ONLY` and `COPY … FREEZE` in
/// one transaction, as PostgreSQL requires. The rows are then visible to all and frozen as
/// written, so nothing rewrites every page later (setting hint bits while the indexes are
/// built, the freeze of an anti-wraparound VACUUM), and index-only scans work at once. Only
/// for a database the restore created: the TRUNCATE empties what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    Yes,
    No,
}

/// Settings both sides need, whatever the role or database sets.
const SESSION_SQL: &str = "
set statement_timeout = 0;
set lock_timeout = 0;
set idle_in_transaction_session_timeout = 0;
select set_config('transaction_timeout', '0', false)
  where current_setting('server_version_num')::int >= 170000;
set row_security = off;
set datestyle = 'ISO';
set intervalstyle = 'postgres';
set extra_float_digits = 3;
set search_path = '';
set check_function_bodies = false;";

/// A session reading rows in the exported snapshot `snapshot` (it must still be held by its
/// exporter when this opens).
pub async fn reader(conn: &ConnInfo, snapshot: &str) -> Result<Client, PgError> {
    let client = conn.connect().await?;
    client
        .batch_execute(&format!(
            "begin isolation level repeatable read read only;
             set transaction snapshot '{}';
             {SESSION_SQL}",
            snapshot.replace('\'', "''")
        ))
        .await
        .map_err(|e| PgError::query("opening a COPY session in the snapshot", e))?;
    Ok(client)
}

/// A session writing rows.
pub async fn writer(conn: &ConnInfo) -> Result<Client, PgError> {
    let client = conn.connect().await?;
    client
        .batch_execute(SESSION_SQL)
        .await
        .map_err(|e| PgError::query("setting up a COPY session", e))?;
    Ok(client)
}

/// What one piece's copy did.
#[derive(Debug)]
pub struct Copied {
    /// Rows read from the source (all of the piece, also when the write failed).
    pub read: u64,
    /// Rows the destination's COPY reports written, or its SQL error (the piece is then not
    /// written at all: COPY is one statement). After an error the writer's connection is
    /// not usable any more (tokio-postgres closes it on the aborted COPY's last reply): open
    /// another [`writer`].
    pub written: Result<u64, PgError>,
}

/// The size of one write: rows are gathered into this much before they are sent.
const BATCH: usize = 256 * 1024;

/// Copy `piece` of `table` from `reader` to `writer`. A failure to read, or to reach the
/// destination at all, is an error; an SQL error of the destination's COPY is reported in
/// [`Copied::written`] once the source's rows were all read (and counted).
pub async fn copy_piece(
    reader: &Client,
    writer: &Client,
    table: &CopyTable,
    piece: &Piece,
    freeze: Freeze,
) -> Result<Copied, PgError> {
    let what = || format!("copying the rows of {}.{}", table.schema, table.name);
    let source = reader
        .copy_out(&copy_out_sql(table, piece))
        .await
        .map_err(|e| PgError::query(&what(), e))?;
    let mut source = pin!(source);
    let frozen = freeze == Freeze::Yes && piece.is_whole();
    let opened = async {
        if frozen {
            writer
                .batch_execute(&format!("begin; truncate only {}", table.qualified()))
                .await?;
        }
        writer
            .copy_in::<_, bytes::Bytes>(&copy_in_sql(table, frozen))
            .await
    };
    let sink = match opened.await {
        Ok(s) => s,
        Err(e) if e.as_db_error().is_some() => {
            // The table is not there to write into (its pre-data failed): the rows are still
            // read, and counted.
            let read = drain(&mut source, &what).await?;
            return Ok(Copied {
                read,
                written: Err(PgError::query(&what(), e)),
            });
        }
        Err(e) => return Err(PgError::query(&what(), e)),
    };
    let mut sink = pin!(sink);
    let mut read = 0u64;
    let mut buf = BytesMut::with_capacity(BATCH);
    while let Some(chunk) = source.next().await {
        let chunk = chunk.map_err(|e| PgError::query(&what(), e))?;
        read += newlines(&chunk);
        buf.extend_from_slice(&chunk);
        if buf.len() >= BATCH {
            // Only a lost connection fails a send: the destination's own error comes with
            // the finish.
            sink.send(buf.split().freeze())
                .await
                .map_err(|e| PgError::query(&what(), e))?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.split().freeze())
            .await
            .map_err(|e| PgError::query(&what(), e))?;
    }
    let finished = async {
        let n = sink.as_mut().finish().await?;
        if frozen {
            writer.batch_execute("commit").await?;
        }
        Ok::<_, tokio_postgres::Error>(n)
    };
    let written = match finished.await {
        Ok(n) => Ok(n),
        Err(e) if e.as_db_error().is_some() => Err(PgError::query(&what(), e)),
        Err(e) => return Err(PgError::query(&what(), e)),
    };
    Ok(Copied { read, written })
}

/// Read the rest of a COPY from the source, counting its rows.
async fn drain(
    source: &mut std::pin::Pin<&mut tokio_postgres::CopyOutStream>,
    what: &impl Fn() -> String,
) -> Result<u64, PgError> {
    let mut read = 0;
    while let Some(chunk) = source.next().await {
        read += newlines(&chunk.map_err(|e| PgError::query(&what(), e))?);
    }
    Ok(read)
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, blocks: u64) -> CopyTable {
        CopyTable {
            schema: "public".into(),
            name: name.into(),
            columns: vec!["\"id\"".into(), "\"Note\"".into()],
            blocks,
            bytes: blocks * 8192,
        }
    }

    #[test]
    fn a_big_table_is_cut_into_ranges_that_cover_it_whole() {
        let tables = [table("big", 500_000), table("small", 100)];
        let p = pieces(&tables, 2, true);
        let big: Vec<&Piece> = p.iter().filter(|p| p.table == 0).collect();
        // A quarter of one worker's share: 62,500 blocks, so 8 pieces.
        assert_eq!(big.len(), 8);
        let mut ranges: Vec<(Option<u64>, Option<u64>)> =
            big.iter().map(|p| (p.from, p.to)).collect();
        ranges.sort();
        assert_eq!(ranges[0].0, None, "the first range is open at the start");
        assert_eq!(ranges[7].1, None, "the last range is open at the end");
        for w in ranges.windows(2) {
            assert_eq!(w[0].1, w[1].0, "ranges meet: {ranges:?}");
        }
        // The small table is one piece, after the big ones.
        assert_eq!(
            p.last().map(|p| (p.table, p.from, p.to)),
            Some((1, None, None))
        );
    }

    #[test]
    fn without_cutting_every_table_is_one_piece() {
        let tables = [table("big", 500_000), table("small", 100)];
        let p = pieces(&tables, 2, false);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.from.is_none() && p.to.is_none()));
        assert_eq!(p[0].table, 0, "largest first");
    }

    #[test]
    fn small_tables_are_never_cut() {
        let tables = [table("a", MIN_PIECE_BLOCKS), table("b", 0)];
        let p = pieces(&tables, 8, true);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.from.is_none() && p.to.is_none()));
    }

    #[test]
    fn statements_name_the_columns_and_the_range() {
        let t = table("Orders", 10);
        let whole = Piece {
            table: 0,
            from: None,
            to: None,
            bytes: 0,
        };
        assert_eq!(
            copy_out_sql(&t, &whole),
            "copy \"public\".\"Orders\" (\"id\", \"Note\") to stdout"
        );
        let mid = Piece {
            from: Some(10),
            to: Some(20),
            ..whole
        };
        assert_eq!(
            copy_out_sql(&t, &mid),
            "copy (select \"id\", \"Note\" from only \"public\".\"Orders\" where ctid >= '(10,0)'::tid and ctid < '(20,0)'::tid) to stdout"
        );
        assert_eq!(
            copy_in_sql(&t, false),
            "copy \"public\".\"Orders\" (\"id\", \"Note\") from stdin"
        );
        assert_eq!(
            copy_in_sql(&t, true),
            "copy \"public\".\"Orders\" (\"id\", \"Note\") from stdin freeze"
        );
        let bare = CopyTable {
            columns: Vec::new(),
            ..t
        };
        assert_eq!(
            copy_in_sql(&bare, false),
            "copy \"public\".\"Orders\" from stdin"
        );
    }

    #[test]
    fn rows_are_the_newlines_of_the_text_format() {
        assert_eq!(newlines(b"1\ta\\nb\n2\t\\N\n"), 2);
        assert_eq!(newlines(b""), 0);
    }
}
