//! The rows of a point-in-time restore, carried by dr itself: `COPY … TO STDOUT` in the
//! sandbox's snapshot into `COPY … FROM STDIN` on the destination (`dr_pg::copy`), with no
//! pg_dump archive between them. COPY is what pg_restore runs too; what is saved is the
//! archive's encoding and decoding on cores that also run both servers (docs/BENCHMARKS.md,
//! "PITR into a database: dr carries the rows").
//!
//! The pieces are shared by `--jobs` workers, each taking the next largest. Into a database
//! the restore created, each table is one piece written frozen (`COPY … FREEZE`: measured
//! faster to index, and nothing rewrites the pages later); into an existing one, the
//! largest tables are cut into block ranges instead. The rows are counted as they are read:
//! those counts are what the restored database is compared with, so the sandbox is not
//! scanned a second time. Everything else of the data section (sequence values, large
//! objects, the data of extensions' configuration tables) is a `pg_dump
//! --exclude-table-data` of the copied tables, beside the workers.
//!
//! Like pg_restore, a COPY the destination refuses is an error reported at the end and the
//! others go on; a source that fails stops the restore.

use std::collections::VecDeque;
use std::sync::Mutex;

use dr_pg::copy::{CopyTable, Freeze, Piece};
use dr_pg::{exact_pattern, ConnInfo, TableRows};

use crate::{Error, Kind, Result};

/// Every table's rows to copy, the pieces not yet taken and the rows read so far.
pub(super) struct Rows {
    source: ConnInfo,
    snapshot: String,
    tables: Vec<CopyTable>,
    freeze: Freeze,
    queue: Mutex<VecDeque<Piece>>,
    /// Per table: rows read, pieces copied, pieces made.
    read: Mutex<Vec<(u64, usize, usize)>>,
}

impl Rows {
    /// The rows of `tables`, read from `source` in the exported snapshot `snapshot` by
    /// `jobs` workers. Written frozen (into a database the restore created), each table is
    /// one piece; otherwise the largest are cut so that they share the workers.
    pub(super) fn new(
        source: ConnInfo,
        snapshot: String,
        tables: Vec<CopyTable>,
        jobs: u32,
        freeze: Freeze,
    ) -> Rows {
        let pieces = dr_pg::copy::pieces(&tables, jobs, freeze == Freeze::No);
        let mut read = vec![(0, 0, 0); tables.len()];
        for p in &pieces {
            read[p.table].2 += 1;
        }
        Rows {
            source,
            snapshot,
            tables,
            freeze,
            queue: Mutex::new(pieces.into()),
            read: Mutex::new(read),
        }
    }

    /// pg_dump's arguments that leave out the rows copied here.
    pub(super) fn excluded(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| format!("--exclude-table-data={}", exact_pattern(&t.schema, &t.name)))
            .collect()
    }

    fn next(&self) -> Option<Piece> {
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }

    /// One worker: pieces until none is left, written through `dest`. Returns what the
    /// destination refused (each COPY's error); a failure to read the sandbox or to reach
    /// the destination is the error.
    pub(super) async fn work(&self, dest: &ConnInfo) -> Result<Vec<String>> {
        let mut errors = Vec::new();
        let mut reader = None;
        let mut writer = None;
        while let Some(piece) = self.next() {
            let reader = match reader {
                Some(ref r) => r,
                None => reader.insert(
                    dr_pg::copy::reader(&self.source, &self.snapshot)
                        .await
                        .map_err(|e| Error::from(e).context("reading the sandbox's rows"))?,
                ),
            };
            let w = match writer {
                Some(ref w) => w,
                None => writer.insert(dr_pg::copy::writer(dest).await.map_err(|e| {
                    Error::from(e).context(format!("writing the rows into {dest}"))
                })?),
            };
            let table = &self.tables[piece.table];
            let copied = dr_pg::copy::copy_piece(reader, w, table, &piece, self.freeze).await?;
            tracing::debug!(table = %format!("{}.{}", table.schema, table.name), from = ?piece.from, to = ?piece.to, rows = copied.read, "rows copied");
            if let Ok(mut read) = self.read.lock() {
                read[piece.table].0 += copied.read;
                read[piece.table].1 += 1;
            }
            match copied.written {
                Ok(n) if n == copied.read => {}
                Ok(n) => errors.push(format!(
                    "{}.{}: {} rows read from the sandbox, but the destination's COPY wrote {n}",
                    table.schema, table.name, copied.read
                )),
                Err(e) => {
                    errors.push(e.to_string());
                    // A refused COPY leaves its connection unusable: the next piece opens
                    // another.
                    writer = None;
                }
            }
        }
        Ok(errors)
    }

    /// Every table's rows as read, once every piece was copied (in name order, as the
    /// snapshot counts them).
    pub(super) fn counts(&self) -> Result<Vec<TableRows>> {
        let read = self.read.lock().map_err(|_| {
            Error::new(Kind::Failed, "the row counts were lost (a worker panicked)")
        })?;
        let mut out = Vec::with_capacity(self.tables.len());
        for (i, t) in self.tables.iter().enumerate() {
            let (rows, done, made) = read[i];
            if done < made {
                return Err(Error::new(
                    Kind::Failed,
                    format!(
                        "the rows of {}.{} were not copied: the restore stopped first",
                        t.schema, t.name
                    ),
                ));
            }
            out.push(TableRows {
                schema: t.schema.clone(),
                name: t.name.clone(),
                rows: i64::try_from(rows).unwrap_or(i64::MAX),
            });
        }
        out.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        Ok(out)
    }
}
