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
//!
//! The manifest is signed with `[signing] key_file` ([`crate::trust`]): `manifest.json.sig`
//! is written just before the manifest, which stays the commit point. A host without a
//! signing key makes no backups (no restore host would trust them).
//!
//! Here: the run (lock, max_duration, ids, globals, details, the commit). `sections`: the
//! pg_dump streams and their uploads. `server`: what a `databases = "all"` target stands for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use dr_catalog::{
    keys, BackupDetails, BackupId, Manifest, ObjectRecord, ObjectRole, MANIFEST_FORMAT,
};
use dr_config::TargetConfig;
use dr_pg::{ChildProcess, ConnInfo, ServerVersion, Snapshot, Tool};
use dr_store::ObjectStore;
use dr_stream::Recipients;

use crate::lock::RunLock;
use crate::{human_bytes, Context, Error, Kind, Result, DR_VERSION};

mod fresh_id;
mod sections;
mod server;
mod waits;

use sections::{dump_sections, sections_to_dump};
pub use server::{closed_database, expand, server_databases, ServerDatabases};

/// Back up one target, holding its lock. A run that outlives `backup.max_duration` is
/// stopped like an interrupted one (upload aborted, nothing committed, lock released) and
/// fails: a hung run must not hold the target's lock forever.
pub async fn run(ctx: &Context, target: &TargetConfig) -> Result<Manifest> {
    crate::trust::require_signing_key(ctx)?;
    let limit = ctx.config.backup.max_duration;
    let run_ctx = ctx.with_cancel(ctx.cancel.child_token());
    let deadline =
        Utc::now() + chrono::Duration::from_std(limit.0).unwrap_or(chrono::Duration::MAX);
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
        let lock = RunLock::acquire_for(&run_ctx, &target.name, "backup").await?;
        let result = run_locked(&run_ctx, target, &lock, deadline).await;
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

struct Written {
    keys: Vec<String>,
}

/// `deadline`: when `backup.max_duration` stops the run (said in lock wait reports).
async fn run_locked(
    ctx: &Context,
    target: &TargetConfig,
    lock: &RunLock,
    deadline: chrono::DateTime<Utc>,
) -> Result<Manifest> {
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
    let lock_slots: Option<usize> = dr_pg::LockTable::query(&client)
        .await
        .ok()
        .and_then(|t| usize::try_from(t.slots()).ok());
    drop(client);

    let store = ctx.store.as_ref();
    // Ids have one-second resolution: a backup right after another waits for a fresh second.
    // Never write into the prefix of a committed backup (clock stepped back, or a twin run).
    let (started_at, id) = fresh_id::choose(ctx, &target.name, started_at).await?;
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
        deadline,
        &mut written,
    )
    .await;
    let (sections, globals, details) = match result {
        Ok(v) => v,
        Err(e) => {
            cleanup(store, &keys::manifest(&target.name, &id), &written).await;
            return Err(waits::explain_lock_timeout(e, &conn, ctx).await);
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
    // The signature first (a leftover without the manifest), then the commit point.
    let manifest_key = keys::manifest(&target.name, &id);
    written
        .keys
        .push(crate::trust::signature_key(&manifest_key));
    if let Err(e) = crate::trust::put_signature(store, &ctx.signing, &manifest_key, &json).await {
        cleanup(store, &manifest_key, &written).await;
        return Err(e);
    }
    // The commit point. put_if_absent: never overwrite another run's manifest.
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
        seconds = crate::time::seconds(clock.elapsed()),
        "backup complete"
    );
    Ok(manifest)
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
    deadline: chrono::DateTime<Utc>,
    written: &mut Written,
) -> Result<(Vec<ObjectRecord>, ObjectRecord, ObjectRecord)> {
    let store = ctx.store.as_ref();
    let level = ctx.config.backup.zstd_level;
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
        deadline,
        ctx.config.backup.max_duration.to_string(),
    );

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
            let g = dump_globals(pg_dumpall, &session, superuser, ctx).await?;
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
    let snapshot = Snapshot::begin(&conn.with_application_name(&snapshot_name), lock_wait).await?;
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
            &session_name,
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
        // What the manifest must list besides the details: a restore cross-checks it.
        objects: dump.iter().chain([&globals]).cloned().collect(),
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
