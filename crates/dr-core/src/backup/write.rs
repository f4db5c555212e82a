//! The objects of one backup, written before its manifest: the globals script, the sections
//! (pg_dump streams) with the row counts taken in the same snapshot meanwhile, the details.
//! Every key written is recorded in [`Written`] so a failed run can remove them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use dr_catalog::{keys, BackupDetails, BackupId, ObjectRecord, ObjectRole};
use dr_config::TargetConfig;
use dr_pg::{ChildProcess, ConnInfo, DataSplit, Inventory, Snapshot, Tool};
use dr_store::ObjectStore;
use dr_stream::Recipients;

use super::sections::{self, dump_sections, sections_to_dump, SectionJob};
use super::{waits, Source, Written};
use crate::{human_bytes, Context, Error, Kind, Result};

/// What writing a backup's objects needs: the run, the server as inspected, the id.
pub(super) struct Objects<'a> {
    pub(super) ctx: &'a Context,
    pub(super) target: &'a TargetConfig,
    pub(super) source: &'a Source,
    pub(super) id: &'a BackupId,
    /// Parts and objects of every section stream.
    pub(super) plan: dr_store::StreamPlan,
    pub(super) recipients: &'a Arc<Recipients>,
    /// When `backup.max_duration` stops the run (said in lock wait reports).
    pub(super) deadline: chrono::DateTime<Utc>,
}

/// The sections (in restore order), the globals and the details, each stored.
pub(super) async fn write_objects(
    w: &Objects<'_>,
    written: &mut Written,
) -> Result<(Vec<ObjectRecord>, ObjectRecord, ObjectRecord)> {
    let (ctx, conn) = (w.ctx, &w.source.conn);
    // The run's sessions have names of their own, to watch their lock waits: pg_dumpall
    // and the pg_dumps `dr-backup-PID-N` (ended by that name if the run stops), the
    // snapshot and its counting `dr-backup-PID-N-snapshot` (ended by its pid: a failed
    // pg_dump must not take the counting down with it and hide its own error).
    let session_name = sections::backup_session_name();
    let session = conn.with_application_name(&session_name);
    let snapshot_name = format!("{session_name}-snapshot");
    let _watcher = waits::watch(
        conn,
        [session_name.clone(), snapshot_name.clone()],
        ctx.config.backup.lock_wait_timeout_secs,
        w.deadline,
        ctx.config.backup.max_duration.to_string(),
    );

    // Globals first: small, and a failure here should not cost a full dump.
    let globals = write_globals(w, &session, written).await?;

    let lock_wait = Duration::from_secs(ctx.config.backup.lock_wait_timeout_secs);
    let (snapshot, snapshot_lsn) = begin_snapshot(
        w.source,
        &conn.with_application_name(&snapshot_name),
        lock_wait,
    )
    .await?;
    let split = match plan_streams(ctx, &snapshot).await {
        Ok(split) => split,
        Err(e) => {
            snapshot.abandon(conn).await;
            return Err(e);
        }
    };
    let jobs = sections_to_dump(&w.target.name, w.id, &split);
    written.keys.extend(jobs.iter().map(|j| j.key.clone()));
    let schema_first = schema_first(w.source.lock_slots, &split);
    let (dump, inventory) = dump_and_count(w, &session_name, &snapshot, &jobs, schema_first).await;
    // The sections' further objects, whatever the outcome: a failed run deletes them too.
    for j in &jobs {
        written.keys.extend(
            j.more_keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .drain(..),
        );
    }
    let Some(inventory) = inventory else {
        // The counting session may be waiting for a lock: end it on the server.
        snapshot.abandon(conn).await;
        return Err(match dump {
            Some(Err(e)) => e,
            _ => Error::interrupted("the backup"),
        });
    };
    // The snapshot transaction ends only after every pg_dump exited (dump_sections waited).
    snapshot.finish().await;
    // A failed count is the cause when the dumps were stopped because of it.
    let inventory =
        inventory.map_err(|e| Error::from(e).context("counting rows in the dump's snapshot"))?;
    let dump = match dump {
        Some(d) => d?,
        None => return Err(Error::interrupted("the backup")),
    };
    let details =
        write_details(w, inventory, snapshot_lsn, &split, &dump, &globals, written).await?;
    Ok((dump, globals, details))
}

/// How long creating the snapshot's replication slot may wait for the transactions running
/// when it starts; past it the dump goes on without its WAL position.
const SLOT_WAIT: Duration = Duration::from_secs(60);

/// The dump's snapshot and, where the source can give it, the WAL position it corresponds
/// to: a temporary logical slot exports the snapshot, this run's transaction imports it
/// (and holds it from then on), the slot goes. A slot that cannot be had (no REPLICATION
/// attribute, no free slot, a long transaction) costs only the position: said, not fatal.
async fn begin_snapshot(
    source: &Source,
    conn: &ConnInfo,
    lock_wait: Duration,
) -> Result<(Snapshot, Option<String>)> {
    static SLOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    if let Some(psql) = &source.exact_position {
        let n = SLOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = dr_pg::slot_snapshot::slot_name(n);
        match dr_pg::slot_snapshot::SlotSnapshot::create(psql, conn, &slot, SLOT_WAIT).await {
            Ok(exported) => {
                let snapshot = Snapshot::begin(conn, lock_wait, Some(&exported.id)).await;
                let lsn = exported.lsn.clone();
                exported.release().await;
                tracing::info!(%lsn, "the dump's snapshot is the WAL position {lsn} (temporary slot {slot})");
                return Ok((snapshot?, Some(lsn)));
            }
            Err(e) => tracing::warn!(
                "{}: the dump goes on without its exact WAL position (a drill cannot prove its counts)",
                Error::from(e).context("creating a temporary logical replication slot for the dump's snapshot").summary()
            ),
        }
    }
    Ok((Snapshot::begin(conn, lock_wait, None).await?, None))
}

/// The roles and tablespaces (`pg_dumpall --globals-only`), stored. One dump per server and
/// run: the databases of a `databases = "all"` target share it.
async fn write_globals(
    w: &Objects<'_>,
    session: &ConnInfo,
    written: &mut Written,
) -> Result<ObjectRecord> {
    let ctx = w.ctx;
    let globals_key = keys::object(&w.target.name, w.id, keys::GLOBALS);
    let shared = w.target.expanded_from.as_ref().map(|x| &x.globals);
    let globals_sql = match shared.and_then(|g| g.0.get()) {
        Some(g) => {
            tracing::info!(
                bytes = g.len(),
                "roles and tablespaces: reusing this run's pg_dumpall --globals-only"
            );
            g.clone()
        }
        None => {
            let g = dump_globals(&w.source.pg_dumpall, session, w.source.superuser, ctx).await?;
            tracing::info!(
                bytes = g.len(),
                "roles and tablespaces dumped (pg_dumpall --globals-only)"
            );
            if let Some(s) = shared {
                // A concurrent twin may have set it first: both dumps are of the same server.
                let _ = s.0.set(g.clone());
            }
            g
        }
    };
    let globals = put_sealed(
        ctx.store.as_ref(),
        &globals_key,
        &globals_sql,
        w.recipients,
        ctx.config.backup.zstd_level,
        ObjectRole::Globals,
    )
    .await?;
    written.keys.push(globals_key);
    Ok(globals)
}

/// The data streams: the snapshot's tables by size, split over `backup.jobs`.
async fn plan_streams(ctx: &Context, snapshot: &Snapshot) -> Result<DataSplit> {
    // Catalog reads only (no table locks), but a signal or max_duration must not wait for it.
    let sizes = tokio::select! {
        r = snapshot.table_sizes() => r.map_err(|e| Error::from(e).context("planning the data streams")),
        () = ctx.cancel.cancelled() => Err(Error::interrupted("the backup")),
    };
    Ok(dr_pg::split_data(&sizes?, ctx.config.backup.jobs()))
}

/// Every pg_dump locks each table it dumps (ACCESS SHARE, whatever the section), and so
/// does the counting: all sections at once hold ~4 locks per table. The server's lock
/// table is shared with the application; where a quarter of it would not hold that,
/// dump pre-data and post-data first (catalog only, quick), then the data streams: ~2
/// per table at any time, as a single pg_dump with its count.
fn schema_first(lock_slots: Option<usize>, split: &DataSplit) -> bool {
    let tables = split.streams.iter().map(|s| s.tables.len()).sum::<usize>();
    let schema_first = lock_slots.is_some_and(|slots| tables.saturating_mul(4) > slots / 4);
    if schema_first {
        tracing::info!(
            tables,
            lock_slots = lock_slots.unwrap_or(0),
            "many tables for the server's lock table: pre-data and post-data first, then the data streams"
        );
    }
    tracing::info!(
        streams = split.streams.len(),
        split = %split
            .streams
            .iter()
            .map(|s| format!(
                "data-{}: {} tables, {}",
                s.number,
                s.tables.len(),
                // relpages: 0 until the first VACUUM or ANALYZE.
                if s.bytes == 0 { "size unknown (not analyzed)".to_string() } else { format!("~{}", human_bytes(s.bytes)) }
            ))
            .collect::<Vec<_>>()
            .join("; "),
        "dumping pre-data, data and post-data"
    );
    schema_first
}

/// The dumps and the counting, at once. A failed dump or a signal (or max_duration) must
/// not wait for a count that is stuck behind a table lock: `None` for what did not finish.
async fn dump_and_count(
    w: &Objects<'_>,
    session_name: &str,
    snapshot: &Snapshot,
    jobs: &[SectionJob],
    schema_first: bool,
) -> (
    Option<Result<Vec<ObjectRecord>>>,
    Option<std::result::Result<Inventory, dr_pg::PgError>>,
) {
    let ctx = w.ctx;
    let dumps_cancel = ctx.cancel.child_token();
    let dumps_ctx = ctx.with_cancel(dumps_cancel.clone());
    let upload = dump_sections(
        &dumps_ctx,
        &w.source.conn,
        session_name,
        &w.source.pg_dump,
        snapshot.id(),
        jobs,
        schema_first,
        w.plan,
        w.recipients,
    );
    let counting = snapshot.inventory();
    tokio::pin!(upload, counting);
    let mut dump = None;
    let mut inventory = None;
    while dump.is_none() || inventory.is_none() {
        tokio::select! {
            r = &mut upload, if dump.is_none() => {
                let failed = r.is_err();
                dump = Some(r);
                if failed {
                    break;
                }
            }
            r = &mut counting, if inventory.is_none() => {
                let failed = r.is_err();
                inventory = Some(r);
                if failed {
                    // The dumps would run on for nothing (and then fail on the ended
                    // snapshot, hiding the cause): stop them, wait until they have.
                    dumps_cancel.cancel();
                    let _ = (&mut upload).await;
                    break;
                }
            }
            // The upload sees the signal itself (and aborts); only a finished one is
            // left behind for a count that cannot finish.
            () = ctx.cancel.cancelled(), if dump.is_some() => break,
        }
    }
    (dump, inventory)
}

/// The details (row counts, sequences, owners, the objects the manifest must list), stored
/// encrypted.
async fn write_details(
    w: &Objects<'_>,
    inventory: Inventory,
    snapshot_lsn: Option<String>,
    split: &DataSplit,
    dump: &[ObjectRecord],
    globals: &ObjectRecord,
    written: &mut Written,
) -> Result<ObjectRecord> {
    let objects = dump.iter().chain([globals]).cloned().collect();
    let details = details_of(inventory, snapshot_lsn, split, objects);
    let details_json = serde_json::to_vec(&details)
        .map_err(|e| Error::new(Kind::Failed, format!("encoding details: {e}")))?;
    let details_key = keys::object(&w.target.name, w.id, keys::DETAILS);
    let details_rec = put_sealed(
        w.ctx.store.as_ref(),
        &details_key,
        &details_json,
        w.recipients,
        w.ctx.config.backup.zstd_level,
        ObjectRole::Details,
    )
    .await?;
    written.keys.push(details_key);
    tracing::info!(
        tables = details.tables.len(),
        rows = details.total_rows(),
        "row counts recorded (encrypted)"
    );
    Ok(details_rec)
}

/// The details of a dump: the snapshot's inventory and WAL position (when known), each table
/// with its data stream, and `objects` (what the manifest must list besides the details: a
/// restore cross-checks it).
pub(crate) fn details_of(
    inventory: Inventory,
    snapshot_lsn: Option<String>,
    split: &DataSplit,
    objects: Vec<ObjectRecord>,
) -> BackupDetails {
    BackupDetails {
        format: 2,
        database: inventory.database,
        tables: inventory
            .tables
            .into_iter()
            .map(|t| dr_catalog::TableCount {
                stream: split.stream_of(&t.schema, &t.name),
                schema: t.schema,
                name: t.name,
                rows: t.rows,
            })
            .collect(),
        sequences: inventory
            .sequences
            .into_iter()
            .map(|s| dr_catalog::SequenceValue {
                schema: s.schema,
                name: s.name,
                last_value: s.last_value,
                is_called: s.is_called,
            })
            .collect(),
        large_objects: inventory.large_objects,
        extensions: inventory.extensions,
        owners: inventory.owners,
        objects,
        snapshot_lsn,
    }
}

pub(super) async fn put_sealed(
    store: &dyn ObjectStore,
    key: &str,
    data: &[u8],
    recipients: &Recipients,
    level: i32,
    role: ObjectRole,
) -> Result<ObjectRecord> {
    let sealed = dr_stream::seal(data, recipients, level)?;
    let record = ObjectRecord {
        role,
        key: key.to_string(),
        bytes: sealed.len() as u64,
        sha256: dr_stream::sha256_hex(&sealed),
        raw_bytes: data.len() as u64,
        part_bytes: None,
        restore_step: None,
        chunks: Vec::new(),
    };
    store
        .put(key, Bytes::from(sealed))
        .await
        .map_err(|e| Error::from(e).context(format!("uploading {key}")))?;
    Ok(record)
}

/// `pg_dumpall --globals-only` of the server of `conn`: the roles and tablespaces script
/// (without passwords unless `superuser`).
pub(crate) async fn dump_globals(
    pg_dumpall: &Tool,
    conn: &ConnInfo,
    superuser: bool,
    ctx: &Context,
) -> Result<Vec<u8>> {
    let mut args = vec![
        "--globals-only".to_string(),
        "--no-password".to_string(),
        format!("--dbname={}", conn.dbname_arg()),
    ];
    if !superuser {
        // Only superusers may read pg_authid; everyone else gets roles without passwords.
        args.push("--no-role-passwords".into());
    }
    let mut child = ChildProcess::spawn(
        &pg_dumpall.path,
        &args,
        Some(conn),
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    )?;
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout() {
        use tokio::io::AsyncReadExt;
        tokio::select! {
            r = stdout.read_to_end(&mut out) => {
                r.map_err(|e| Error::new(Kind::Failed, format!("reading pg_dumpall output: {e}")))?;
            }
            _ = ctx.cancel.cancelled() => {
                child.kill();
                return Err(Error::interrupted("the backup"));
            }
        }
    }
    child
        .wait()
        .await
        .map_err(|e| Error::from(e).context("dumping roles and tablespaces"))?;
    Ok(out)
}
