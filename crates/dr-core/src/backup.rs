//! `dr backup`: pg_dump → zstd → age → multipart upload, globals and details beside it, the
//! manifest last.
//!
//! The archive is written in sections (manifest format 2), all at once, all in one exported
//! snapshot held until every pg_dump exited: `pre-data`, the data section split into
//! `backup.jobs` streams ([`dr_pg::split_data`]: tables largest first to the least-loaded
//! stream), and `post-data`. Each is its own `pg_dump -Fc -Z0 --section=…` whose stdout is
//! read on a blocking thread, compressed and encrypted into equal-size parts, each handed to
//! the async uploader through a channel of depth one: memory is bounded per stream and nothing
//! is staged on disk. The exact row counts are taken in the same snapshot meanwhile.
//!
//! Failure anywhere (pg_dump exit status, counting, upload, signal) aborts the multipart
//! upload, deletes what was already written and writes no manifest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use dr_catalog::{
    keys, BackupDetails, BackupId, Manifest, ObjectRecord, ObjectRole, MANIFEST_FORMAT, STEP_DATA,
    STEP_POST_DATA, STEP_PRE_DATA,
};
use dr_config::{SharedGlobals, TargetConfig};
use dr_pg::{ChildProcess, ConnInfo, ServerVersion, Snapshot, Tool};
use dr_store::ObjectStore;
use dr_stream::{Compression, PartWriter, Recipients};

use crate::lock::RunLock;
use crate::{human_bytes, Context, Error, Kind, Result, DR_VERSION};

/// Back up one target, holding its lock. A run that outlives `backup.max_duration` is
/// stopped like an interrupted one (upload aborted, nothing committed, lock released) and
/// fails: a hung run must not hold the target's lock forever.
pub async fn run(ctx: &Context, target: &TargetConfig) -> Result<Manifest> {
    let limit = ctx.config.backup.max_duration;
    let run_ctx = ctx.with_cancel(ctx.cancel.child_token());
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = {
        let cancel = run_ctx.cancel.clone();
        let timed_out = Arc::clone(&timed_out);
        tokio::spawn(async move {
            tokio::time::sleep(limit.0).await;
            timed_out.store(true, Ordering::SeqCst);
            tracing::error!("the backup has run for backup.max_duration ({limit}): stopping it");
            cancel.cancel();
        })
    };
    let result = async {
        let lock = RunLock::acquire(
            Arc::clone(&run_ctx.store),
            &target.name,
            "backup",
            Duration::from_secs(run_ctx.config.lock.ttl_secs),
            Duration::from_secs(run_ctx.config.lock.wait_secs),
            &run_ctx.cancel,
        )
        .await?;
        let result = run_locked(&run_ctx, target, &lock).await;
        lock.release().await;
        result
    }
    .await;
    timer.abort();
    let result = match result {
        Err(e) if e.kind == Kind::Interrupted && timed_out.load(Ordering::SeqCst) => Err(Error::new(
            Kind::Failed,
            format!(
                "it ran longer than backup.max_duration ({limit}) and was stopped; the upload was aborted and nothing was committed\nhint: look for what made it slow (a lock: see the log; the network; a much larger database) or raise backup.max_duration"
            ),
        )),
        other => other,
    };
    result.map_err(|e| e.context(format!("backup of target `{}` failed", target.name)))
}

/// The targets one configured target stands for now: itself, or, for a `databases = "all"`
/// target, one target per database of its server (listed over a connection to `url`) minus
/// `exclude_databases`, in name order, sharing one globals dump. A server with nothing left
/// to back up is an error: a run that backs up nothing must not look like a success.
pub async fn expand(target: &TargetConfig) -> Result<Vec<TargetConfig>> {
    if !target.is_server() {
        return Ok(vec![target.clone()]);
    }
    let all = server_databases(target).await?;
    let included = target.included_databases(&all);
    if included.is_empty() {
        return Err(Error::config(format!(
            "target `{}`: no database to back up ({} found, all excluded by exclude_databases)",
            target.name,
            all.len()
        )));
    }
    tracing::info!(
        target = %target.name,
        databases = %included.join(", "),
        excluded = %target.exclude_databases.join(", "),
        "every database of the server: {} to back up",
        included.len()
    );
    let globals = SharedGlobals::default();
    Ok(included
        .iter()
        .map(|d| target.for_database(d, &globals))
        .collect())
}

/// The databases of a server target's server that accept connections, templates excepted.
pub async fn server_databases(target: &TargetConfig) -> Result<Vec<String>> {
    let listing = async {
        let client = ConnInfo::parse(&target.url)?.connect().await?;
        let rows = client
            .query(
                "select datname from pg_database where datallowconn and not datistemplate order by datname",
                &[],
            )
            .await
            .map_err(|e| Error::new(Kind::Failed, format!("reading pg_database: {e}")))?;
        Ok::<_, Error>(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    };
    listing
        .await
        .map_err(|e| e.context(format!("listing the databases of target `{}`", target.name)))
}

struct Written {
    keys: Vec<String>,
}

async fn run_locked(ctx: &Context, target: &TargetConfig, lock: &RunLock) -> Result<Manifest> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let recipients = Arc::new(ctx.recipients()?);
    let conn = ConnInfo::parse(&target.url)?;
    // One database of a server target: name it exactly, whatever the URL's escaping.
    let conn = match &target.expanded_from {
        Some(x) => conn.with_dbname(&x.database),
        None => conn,
    };
    let client = conn.connect().await?;
    let version = ServerVersion::query(&client).await?;
    let bin_dir = target
        .pg_bin_dir
        .as_deref()
        .or(ctx.config.backup.pg_bin_dir.as_deref());
    let pg_dump = dr_pg::find_tool("pg_dump", version.major, bin_dir)?;
    let pg_dumpall = dr_pg::find_tool("pg_dumpall", pg_dump.major, bin_dir)?;
    let database_bytes: i64 = client
        .query_one("select pg_database_size(current_database())", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("reading the database size: {e}")))?
        .get(0);
    let database_bytes = u64::try_from(database_bytes).unwrap_or(0);
    let superuser: bool = client
        .query_one(
            "select rolsuper from pg_roles where rolname = current_user",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(false);
    // The server's lock table: max_locks_per_transaction x (max_connections +
    // max_prepared_transactions) table locks in all, shared by every session.
    let lock_slots: Option<usize> = client
        .query_one(
            "select current_setting('max_locks_per_transaction')::bigint * (current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)",
            &[],
        )
        .await
        .ok()
        .and_then(|r| usize::try_from(r.get::<_, i64>(0)).ok());
    drop(client);

    let store = ctx.store.as_ref();
    // Ids have one-second resolution: a backup right after another waits for a fresh second.
    // Never write into the prefix of a committed backup (clock stepped back, or a twin run).
    let mut started_at = started_at;
    let mut id = BackupId::from_time(started_at);
    let mut attempts = 0;
    while store
        .head(&keys::manifest(&target.name, &id))
        .await?
        .is_some()
    {
        attempts += 1;
        if attempts > 3 {
            return Err(Error::new(
                Kind::Failed,
                format!("backup {id} of `{}` already exists and the clock does not move on\nhint: check the system clock (NTP)", target.name),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        started_at = Utc::now();
        id = BackupId::from_time(started_at);
    }
    // The store knows its limits (S3: 5 MiB..5 GiB, 10,000 parts); one size for every part.
    let part_size = ctx
        .store
        .part_limits()
        .part_size_for(database_bytes, ctx.config.backup.part_size_mib);
    tracing::info!(
        target = %target.name, %id, server = %version.text, pg_dump = %pg_dump.version,
        database_size = %human_bytes(database_bytes), part_size = %human_bytes(part_size),
        "backup started"
    );

    let mut written = Written { keys: Vec::new() };
    let result = write_objects(
        ctx,
        target,
        &conn,
        &pg_dump,
        &pg_dumpall,
        superuser,
        &id,
        part_size,
        lock_slots,
        &recipients,
        &mut written,
    )
    .await;
    let (sections, globals, details) = match result {
        Ok(v) => v,
        Err(e) => {
            cleanup(store, &keys::manifest(&target.name, &id), &written).await;
            return Err(explain_lock_timeout(e, &conn, ctx).await);
        }
    };

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id,
        target: target.name.clone(),
        started_at,
        finished_at: Utc::now(),
        server_version: version.text.clone(),
        server_major: version.major,
        pg_dump_version: pg_dump.version.clone(),
        dr_version: DR_VERSION.to_string(),
        database_bytes,
        compression: "zstd".into(),
        encryption: "age".into(),
        recipients: recipients.to_strings(),
        // Sections in restore order (data streams together), then globals and details.
        objects: sections.into_iter().chain([globals, details]).collect(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::new(Kind::Failed, format!("encoding the manifest: {e}")))?;
    json.push(b'\n');
    // Still ours? A run whose lock was taken over must not commit next to its successor.
    if let Err(e) = lock.check().await {
        cleanup(store, &keys::manifest(&target.name, &id), &written).await;
        return Err(e);
    }
    // The commit point. put_if_absent: never overwrite another run's manifest.
    let manifest_key = keys::manifest(&target.name, &id);
    let committed = if ctx.cancel.is_cancelled() {
        Err(Error::interrupted("the backup"))
    } else {
        match store
            .put_if_absent(&manifest_key, Bytes::from(json.clone()))
            .await
        {
            Ok(true) => Ok(()),
            // A retried conditional PUT whose first attempt was stored answers 412: if the
            // manifest there is byte for byte ours, the commit happened.
            Ok(false) => match store.get(&manifest_key).await {
                Ok(existing) if existing.as_ref() == json.as_slice() => Ok(()),
                _ => Err(Error::new(
                    Kind::Failed,
                    format!("another run wrote backup {id} at the same time"),
                )),
            },
            Err(e) => Err(Error::from(e).context("writing the manifest")),
        }
    };
    if let Err(e) = committed {
        cleanup(store, &manifest_key, &written).await;
        return Err(e);
    }
    tracing::info!(
        target = %target.name, %id,
        stored = %human_bytes(manifest.stored_bytes()),
        raw = %human_bytes(manifest.raw_bytes()),
        seconds = clock.elapsed().as_secs_f64(),
        "backup complete"
    );
    Ok(manifest)
}

/// A lock wait that timed out (pg_dump's `--lock-wait-timeout`, or the counting's
/// `lock_timeout`): name the sessions holding ACCESS EXCLUSIVE locks, so the operator knows
/// whom to ask (or what to end) before retrying.
async fn explain_lock_timeout(e: Error, conn: &ConnInfo, ctx: &Context) -> Error {
    // pg_dump's --lock-wait-timeout is a statement_timeout around its LOCK TABLE; the
    // counting's is lock_timeout.
    let text = e.to_string();
    let lock_wait = text.contains("lock timeout")
        || (text.contains("statement timeout") && text.contains("LOCK TABLE"));
    if !lock_wait {
        return e;
    }
    let secs = ctx.config.backup.lock_wait_timeout_secs;
    let holders = match dr_pg::exclusive_lock_holders(conn).await {
        Ok(h) if h.is_empty() => {
            "the lock was released since; no session holds an exclusive table lock now".into()
        }
        Ok(h) => h
            .iter()
            .map(|h| format!("  {h}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(le) => format!("(could not list the lock holders: {le})"),
    };
    Error::new(
        Kind::Failed,
        format!(
            "{}\nwaited {secs} s (backup.lock_wait_timeout_secs) for a table lock; sessions holding exclusive locks:\n{holders}\nhint: let that session finish (or end it: SELECT pg_terminate_backend(PID)), then run the backup again; long migrations are better scheduled away from the backup window",
            e.summary()
        ),
    )
    // The holder may be done by the next try.
    .retryable(true)
}

/// Best effort: remove the objects of a backup that will never get a manifest. Anything left
/// is invisible (no manifest) and `dr prune` removes it after the grace period.
async fn cleanup(store: &dyn ObjectStore, manifest_key: &str, written: &Written) {
    // If a manifest exists at this id it belongs to a committed backup: its objects stay.
    match store.head(manifest_key).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            tracing::warn!("not deleting objects under a committed manifest ({manifest_key})");
            return;
        }
        Err(e) => {
            tracing::warn!("cannot tell whether {manifest_key} exists ({e}); leaving the objects for `dr prune`");
            return;
        }
    }
    for k in &written.keys {
        if let Err(e) = store.delete(k).await {
            tracing::warn!(
                "could not delete {k} of the failed backup: {e}; `dr prune` will remove it"
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_objects(
    ctx: &Context,
    target: &TargetConfig,
    conn: &ConnInfo,
    pg_dump: &Tool,
    pg_dumpall: &Tool,
    superuser: bool,
    id: &BackupId,
    part_size: u64,
    lock_slots: Option<usize>,
    recipients: &Arc<Recipients>,
    written: &mut Written,
) -> Result<(Vec<ObjectRecord>, ObjectRecord, ObjectRecord)> {
    let store = ctx.store.as_ref();
    let level = ctx.config.backup.zstd_level;

    // Globals first: small, and a failure here should not cost a full dump.
    let globals_key = keys::object(&target.name, id, keys::GLOBALS);
    // One dump per server and run: the databases of a `databases = "all"` target share it.
    let shared = target.expanded_from.as_ref().map(|x| &x.globals);
    let globals_sql = match shared.and_then(|g| g.0.get()) {
        Some(g) => {
            tracing::info!(
                bytes = g.len(),
                "roles and tablespaces: reusing this run's pg_dumpall --globals-only"
            );
            g.clone()
        }
        None => {
            let g = dump_globals(pg_dumpall, conn, superuser, ctx).await?;
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
        store,
        &globals_key,
        &globals_sql,
        recipients,
        level,
        ObjectRole::Globals,
    )
    .await?;
    written.keys.push(globals_key);

    let lock_wait = Duration::from_secs(ctx.config.backup.lock_wait_timeout_secs);
    let snapshot = Snapshot::begin(conn, lock_wait).await?;
    // Catalog reads only (no table locks), but a signal or max_duration must not wait for it.
    let sizes = tokio::select! {
        r = snapshot.table_sizes() => r.map_err(|e| Error::from(e).context("planning the data streams")),
        () = ctx.cancel.cancelled() => Err(Error::interrupted("the backup")),
    };
    let split = match sizes {
        Ok(sizes) => dr_pg::split_data(&sizes, ctx.config.backup.jobs()),
        Err(e) => {
            snapshot.abandon(conn).await;
            return Err(e);
        }
    };
    let jobs = sections_to_dump(&target.name, id, &split);
    written.keys.extend(jobs.iter().map(|j| j.key.clone()));
    // Every pg_dump locks each table it dumps (ACCESS SHARE, whatever the section), and so
    // does the counting: all sections at once hold ~4 locks per table. The server's lock
    // table is shared with the application; where a quarter of it would not hold that,
    // dump pre-data and post-data first (catalog only, quick), then the data streams: ~2
    // per table at any time, as a single pg_dump with its count.
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
    // The dumps and the counting run at once. A failed dump or a signal (or max_duration)
    // must not wait for a count that is stuck behind a table lock.
    let dumps_cancel = ctx.cancel.child_token();
    let dumps_ctx = ctx.with_cancel(dumps_cancel.clone());
    let (dump, inventory) = {
        let upload = dump_sections(
            &dumps_ctx,
            conn,
            pg_dump,
            snapshot.id(),
            &jobs,
            schema_first,
            part_size,
            recipients,
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
    };
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

    let details = BackupDetails {
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
    };
    let details_json = serde_json::to_vec(&details)
        .map_err(|e| Error::new(Kind::Failed, format!("encoding details: {e}")))?;
    let details_key = keys::object(&target.name, id, keys::DETAILS);
    let details_rec = put_sealed(
        store,
        &details_key,
        &details_json,
        recipients,
        level,
        ObjectRole::Details,
    )
    .await?;
    written.keys.push(details_key);
    tracing::info!(
        tables = details.tables.len(),
        rows = details.total_rows(),
        "row counts recorded (encrypted)"
    );
    Ok((dump, globals, details_rec))
}

/// One section stream of the archive: which part of `pg_dump` goes into which object.
struct SectionJob {
    role: ObjectRole,
    key: String,
    step: u32,
    /// For logs and errors: "pre-data", "data-2 of 3", "post-data".
    label: String,
    /// `--section=…` and the stream's table selection.
    args: Vec<String>,
}

/// pre-data, every data stream, post-data: in restore order.
fn sections_to_dump(target: &str, id: &BackupId, split: &dr_pg::DataSplit) -> Vec<SectionJob> {
    let n = split.streams.len();
    let mut jobs = vec![SectionJob {
        role: ObjectRole::PreData,
        key: keys::object(target, id, keys::PRE_DATA),
        step: STEP_PRE_DATA,
        label: "pre-data".into(),
        args: vec!["--section=pre-data".into()],
    }];
    for s in &split.streams {
        let mut args = vec!["--section=data".to_string()];
        args.extend(split.pg_dump_args(s.number));
        jobs.push(SectionJob {
            role: ObjectRole::Data,
            key: keys::object(target, id, &keys::data_stream(s.number)),
            step: STEP_DATA,
            label: format!("data-{} of {n}", s.number),
            args,
        });
    }
    jobs.push(SectionJob {
        role: ObjectRole::PostData,
        key: keys::object(target, id, keys::POST_DATA),
        step: STEP_POST_DATA,
        label: "post-data".into(),
        args: vec!["--section=post-data".into()],
    });
    jobs
}

/// Every section, each its own pg_dump and upload: all at once, or (`schema_first`)
/// pre-data and post-data first, then the data streams. The first failure stops the others
/// (their uploads aborted, their pg_dumps stopped) and is the error reported; the records
/// come back in `jobs` order.
#[allow(clippy::too_many_arguments)]
async fn dump_sections(
    ctx: &Context,
    conn: &ConnInfo,
    pg_dump: &Tool,
    snapshot: &str,
    jobs: &[SectionJob],
    schema_first: bool,
    part_size: u64,
    recipients: &Arc<Recipients>,
) -> Result<Vec<ObjectRecord>> {
    let siblings = ctx.cancel.child_token();
    let sctx = ctx.with_cancel(siblings.clone());
    let bar = crate::progress::bytes_bar(ctx.progress, "dumping", None);
    let results = if schema_first {
        let is_data = |j: &&SectionJob| j.role == ObjectRole::Data;
        let schema: Vec<&SectionJob> = jobs.iter().filter(|j| !is_data(j)).collect();
        let mut schema = dump_phase(
            &sctx, &siblings, conn, pg_dump, snapshot, schema, part_size, recipients, &bar,
        )
        .await
        .into_iter();
        let data: Vec<&SectionJob> = jobs.iter().filter(is_data).collect();
        let mut data = dump_phase(
            &sctx, &siblings, conn, pg_dump, snapshot, data, part_size, recipients, &bar,
        )
        .await
        .into_iter();
        // Back into `jobs` order.
        jobs.iter()
            .map(|j| {
                let next = if is_data(&j) {
                    data.next()
                } else {
                    schema.next()
                };
                next.unwrap_or_else(|| Err(Error::interrupted("the backup")))
            })
            .collect::<Vec<_>>()
    } else {
        let all: Vec<&SectionJob> = jobs.iter().collect();
        dump_phase(
            &sctx, &siblings, conn, pg_dump, snapshot, all, part_size, recipients, &bar,
        )
        .await
    };
    bar.finish_and_clear();
    let mut records = Vec::with_capacity(results.len());
    let mut first_error: Option<Error> = None;
    for r in results {
        match r {
            Ok(rec) => records.push(rec),
            // The cause, not a sibling that was stopped because of it (unless a signal or
            // max_duration stopped them all).
            Err(e) => {
                let better = match &first_error {
                    None => true,
                    Some(f) => f.kind == Kind::Interrupted && e.kind != Kind::Interrupted,
                };
                if better {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(_) if ctx.cancel.is_cancelled() => Err(Error::interrupted("the backup")),
        Some(e) => Err(e),
        None => Ok(records),
    }
}

/// One phase of [`dump_sections`]: its sections at once; a failure stops `siblings`.
#[allow(clippy::too_many_arguments)]
async fn dump_phase(
    sctx: &Context,
    siblings: &tokio_util::sync::CancellationToken,
    conn: &ConnInfo,
    pg_dump: &Tool,
    snapshot: &str,
    phase: Vec<&SectionJob>,
    part_size: u64,
    recipients: &Arc<Recipients>,
    bar: &indicatif::ProgressBar,
) -> Vec<Result<ObjectRecord>> {
    futures::future::join_all(phase.into_iter().map(|job| async move {
        if siblings.is_cancelled() {
            return Err(Error::interrupted("the backup"));
        }
        let r = stream_dump(
            sctx, conn, pg_dump, snapshot, job, part_size, recipients, bar,
        )
        .await;
        if r.is_err() {
            siblings.cancel();
        }
        r
    }))
    .await
}

async fn put_sealed(
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
    };
    store
        .put(key, Bytes::from(sealed))
        .await
        .map_err(|e| Error::from(e).context(format!("uploading {key}")))?;
    Ok(record)
}

async fn dump_globals(
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

/// Run pg_dump for one section in the snapshot and stream its archive into a multipart
/// upload; `bar` counts raw bytes of every section together.
#[allow(clippy::too_many_arguments)]
async fn stream_dump(
    ctx: &Context,
    conn: &ConnInfo,
    pg_dump: &Tool,
    snapshot: &str,
    job: &SectionJob,
    part_size: u64,
    recipients: &Arc<Recipients>,
    bar: &indicatif::ProgressBar,
) -> Result<ObjectRecord> {
    let key = job.key.as_str();
    let mut args = vec![
        "--format=custom".to_string(),
        "--compress=0".to_string(),
        "--no-password".to_string(),
        format!("--snapshot={snapshot}"),
        format!("--dbname={}", conn.dbname_arg()),
        // dr reads names as UTF-8 and passes them as -t/-T patterns: pg_dump must speak
        // UTF-8 too, or in a LATIN1 database a name like `café` would match nothing.
        "--encoding=UTF8".to_string(),
    ];
    args.extend(job.args.iter().cloned());
    // The same wait bound as the counting in the snapshot (0: wait as long as it takes).
    let lock_wait = ctx.config.backup.lock_wait_timeout_secs;
    if lock_wait > 0 {
        args.push(format!(
            "--lock-wait-timeout={}",
            lock_wait.saturating_mul(1000)
        ));
    }
    let mut child = ChildProcess::spawn(
        &pg_dump.path,
        &args,
        Some(conn),
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    )?;
    let stdout = child
        .stdout()
        .ok_or_else(|| Error::new(Kind::Failed, "pg_dump has no stdout"))?
        .into_owned_fd()
        .map_err(|e| Error::new(Kind::Failed, format!("pg_dump stdout: {e}")))?;
    let input = std::fs::File::from(stdout);

    let mut upload = match ctx.store.start_multipart(key).await {
        Ok(u) => u,
        Err(e) => {
            child.kill();
            let _ = child.wait().await;
            return Err(Error::from(e).context(format!("starting the upload of {key}")));
        }
    };

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let recipients = Arc::clone(recipients);
    let compression = Compression {
        level: ctx.config.backup.zstd_level,
        threads: ctx.config.backup.zstd_threads,
    };
    let bar2 = bar.clone();
    let part_usize = usize::try_from(part_size).unwrap_or(usize::MAX);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut parts = PartWriter::new(part_usize, |part| {
            tx.blocking_send(part)
                .map_err(|_| std::io::Error::other("the upload stopped"))
        });
        let mut shown = 0;
        let stats = dr_stream::encode(input, &mut parts, &recipients, compression, &mut |n| {
            bar2.inc(n - shown);
            shown = n;
        })?;
        let n = parts.finish().map_err(|e| dr_stream::StreamError::Io {
            stage: "uploading the last part".into(),
            source: e,
        })?;
        Ok::<_, dr_stream::StreamError>((stats, n))
    });

    // Upload parts as they come; stop at the first error or signal.
    let mut upload_error: Option<Error> = None;
    loop {
        tokio::select! {
            part = rx.recv() => match part {
                Some(p) => {
                    // A part can take minutes on a slow link: a signal must not wait for it.
                    let put = tokio::select! {
                        r = upload.put_part(p) => r,
                        _ = ctx.cancel.cancelled() => {
                            upload_error = Some(Error::interrupted("the backup"));
                            break;
                        }
                    };
                    if let Err(e) = put {
                        upload_error = Some(Error::from(e).context(format!("uploading {key}")));
                        break;
                    }
                }
                None => break,
            },
            _ = ctx.cancel.cancelled() => {
                upload_error = Some(Error::interrupted("the backup"));
                break;
            }
        }
    }
    drop(rx);
    if upload_error.is_some() {
        child.kill();
    }
    let encoded = encoder
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("the compression thread failed: {e}")));
    let dumped = child.wait().await;

    let outcome = match (upload_error, dumped, encoded) {
        (Some(e), _, _) => Err(e),
        (None, Err(e), _) => Err(Error::from(e).context(format!(
            "pg_dump ({}) failed; the archive is incomplete",
            job.label
        ))),
        (None, Ok(_), Err(e)) => Err(e),
        (None, Ok(_), Ok(Err(e))) => Err(Error::from(e).context(format!(
            "compressing and encrypting the dump ({})",
            job.label
        ))),
        (None, Ok(_), Ok(Ok(v))) => Ok(v),
    };
    let (stats, parts) = match outcome {
        Ok(v) => v,
        Err(e) => {
            if let Err(ae) = upload.abort().await {
                tracing::error!("could not abort the multipart upload of {key}: {ae}; `dr prune` removes stale uploads");
            }
            return Err(e);
        }
    };
    if ctx.cancel.is_cancelled() {
        let _ = upload.abort().await;
        return Err(Error::interrupted("the backup"));
    }
    upload
        .complete()
        .await
        .map_err(|e| Error::from(e).context(format!("completing the upload of {key}")))?;
    tracing::info!(
        section = %job.label,
        raw = %human_bytes(stats.raw_bytes), stored = %human_bytes(stats.stored_bytes), parts,
        "section uploaded"
    );
    Ok(ObjectRecord {
        role: job.role,
        key: key.to_string(),
        bytes: stats.stored_bytes,
        sha256: stats.sha256,
        raw_bytes: stats.raw_bytes,
        part_bytes: Some(part_size),
        restore_step: Some(job.step),
    })
}
