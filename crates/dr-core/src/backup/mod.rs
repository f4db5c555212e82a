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
//! A physical base backup (`--physical`, manifest format 3) is [`physical`]: the same run
//! lock, max_duration, ids and commit.
//!
//! Here: the run (lock, max_duration, ids, the commit). `write`: the objects before the
//! manifest (globals, the sections with their counts, details). `sections`: the
//! pg_dump streams and their uploads. `server`: what a `databases = "all"` target stands for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use dr_catalog::{keys, Manifest};
use dr_config::TargetConfig;
use dr_pg::{ConnInfo, ServerVersion, Tool};
use dr_store::ObjectStore;

use crate::lock::RunLock;
use crate::{human_bytes, Context, Error, Kind, Result, DR_VERSION};

mod chunks;
mod fresh_id;
pub mod physical;
pub(crate) mod sections;
mod server;
mod waits;
pub(crate) mod write;

pub use server::{closed_database, expand, server_databases, ServerDatabases};

/// Back up one target, holding its lock. A run that outlives `backup.max_duration` is
/// stopped like an interrupted one (upload aborted, nothing committed, lock released) and
/// fails: a hung run must not hold the target's lock forever.
pub async fn run(ctx: &Context, target: &TargetConfig) -> Result<Manifest> {
    run_as(ctx, target, Method::Dump).await
}

/// A physical base backup of the target's cluster (`dr backup --physical`, see
/// [`physical`]), under the same lock and `backup.max_duration` as a dump.
pub async fn run_physical(ctx: &Context, target: &TargetConfig) -> Result<Manifest> {
    run_as(ctx, target, Method::Physical).await
}

#[derive(Clone, Copy)]
enum Method {
    Dump,
    Physical,
}

async fn run_as(ctx: &Context, target: &TargetConfig, method: Method) -> Result<Manifest> {
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
        let result = match method {
            Method::Dump => run_locked(&run_ctx, target, &lock, deadline).await,
            Method::Physical => physical::run_locked(&run_ctx, target, &lock).await,
        };
        lock.release().await;
        result
    }
    .await;
    timer.abort();
    let result = match result {
        Err(e) if e.kind == Kind::Interrupted && timed_out.load(Ordering::SeqCst) => Err(Error::new(
            Kind::Failed,
            format!(
                "it ran longer than backup.max_duration ({limit}) and was stopped; the upload was aborted and nothing was committed"
            ),
        )
        .with_hint("look for what made it slow (a lock: see the log; the network; a much larger database) or raise backup.max_duration")),
        other => other,
    };
    result.map_err(|e| e.context(format!("backup of target `{}` failed", target.name)))
}

struct Written {
    keys: Vec<String>,
}

/// The server as inspected before the run: what to dump it with and how big it is.
struct Source {
    conn: ConnInfo,
    version: ServerVersion,
    pg_dump: Tool,
    pg_dumpall: Tool,
    database_bytes: u64,
    superuser: bool,
    /// The server's lock table: max_locks_per_transaction x (max_connections +
    /// max_prepared_transactions) table locks in all, shared by every session.
    lock_slots: Option<usize>,
    /// `psql`, when the dump's snapshot is to come with its exact WAL position
    /// ([`dr_pg::slot_snapshot`]): a target with WAL on a server with `wal_level = logical`.
    exact_position: Option<Tool>,
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
    let source = inspect_source(ctx, target).await?;
    let store = ctx.store.as_ref();
    let (started_at, id) = fresh_id::choose(ctx, &target.name, started_at).await?;
    // The store knows its limits (S3: 5 MiB..5 GiB, `max_parts` parts); one part size for
    // every stream, whatever the database's size: a longer stream continues in another
    // object, so memory stays flat.
    let plan = ctx
        .store
        .part_limits()
        .stream_plan(ctx.config.backup.part_size_mib);
    tracing::info!(
        target = %target.name, %id, server = %source.version.text, pg_dump = %source.pg_dump.version,
        database_size = %human_bytes(source.database_bytes), part_size = %human_bytes(plan.part_size),
        object_size = %human_bytes(plan.object_bytes()),
        "backup started"
    );

    let mut written = Written { keys: Vec::new() };
    let objects = write::Objects {
        ctx,
        target,
        source: &source,
        id: &id,
        plan,
        recipients: &recipients,
        deadline,
    };
    let (sections, globals, details) = match write::write_objects(&objects, &mut written).await {
        Ok(v) => v,
        Err(e) => {
            cleanup(store, &keys::manifest(&target.name, &id), &written).await;
            return Err(waits::explain_lock_timeout(e, &source.conn, ctx).await);
        }
    };

    // Sections in restore order (data streams together), then globals and details.
    let objects: Vec<_> = sections.into_iter().chain([globals, details]).collect();
    let manifest = Manifest {
        format: Manifest::dump_format(&objects),
        id,
        target: target.name.clone(),
        started_at,
        finished_at: Utc::now(),
        server_version: source.version.text.clone(),
        server_major: source.version.major,
        pg_dump_version: source.pg_dump.version.clone(),
        dr_version: DR_VERSION.to_string(),
        database_bytes: source.database_bytes,
        compression: "zstd".into(),
        encryption: "age".into(),
        recipients: recipients.to_strings(),
        objects,
        kind: dr_catalog::BackupKind::Logical,
        physical: None,
    };
    commit(ctx, lock, &manifest, &mut written).await?;
    tracing::info!(
        target = %target.name, id = %manifest.id,
        stored = %human_bytes(manifest.stored_bytes()),
        raw = %human_bytes(manifest.raw_bytes()),
        seconds = crate::time::seconds(clock.elapsed()),
        "backup complete"
    );
    Ok(manifest)
}

/// Connect to the target's database, read its version, size and lock table, and find the
/// pg_dump and pg_dumpall for it.
async fn inspect_source(ctx: &Context, target: &TargetConfig) -> Result<Source> {
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
    let database_bytes = dr_pg::source::database_size(&client).await?;
    let superuser = dr_pg::source::is_superuser(&client).await.unwrap_or(false);
    let lock_slots: Option<usize> = dr_pg::LockTable::query(&client)
        .await
        .ok()
        .and_then(|t| usize::try_from(t.slots()).ok());
    let exact_position = exact_position(target, &client, version.major, bin_dir).await;
    drop(client);
    Ok(Source {
        conn,
        version,
        pg_dump,
        pg_dumpall,
        database_bytes,
        superuser,
        lock_slots,
        exact_position,
    })
}

/// `psql` for a snapshot with its exact WAL position, where one can be had and is of use:
/// a drill recovers to that position and must then find the dump's counts exactly. Without
/// it the dump is as good; only that proof is lost, so its absence is said, not fatal.
async fn exact_position(
    target: &TargetConfig,
    client: &dr_pg::Client,
    major: u32,
    bin_dir: Option<&std::path::Path>,
) -> Option<Tool> {
    target.wal.as_ref()?;
    match dr_pg::slot_snapshot::wal_level(client).await {
        Ok(level) if level == "logical" => {}
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!("cannot read wal_level ({e}): the dump's WAL position is not recorded");
            return None;
        }
    }
    match dr_pg::find_tool("psql", major, bin_dir) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("{e}: the dump's exact WAL position is not recorded (it needs psql)");
            None
        }
    }
}

/// Sign and write the manifest: the commit point. On any failure the backup's objects are
/// removed (best effort).
async fn commit(
    ctx: &Context,
    lock: &RunLock,
    manifest: &Manifest,
    written: &mut Written,
) -> Result<()> {
    let store = ctx.store.as_ref();
    let id = &manifest.id;
    let mut json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::new(Kind::Failed, format!("encoding the manifest: {e}")))?;
    json.push(b'\n');
    let manifest_key = keys::manifest(&manifest.target, id);
    // Still ours? A run whose lock was taken over must not commit next to its successor.
    if let Err(e) = lock.check().await {
        cleanup(store, &manifest_key, written).await;
        return Err(e);
    }
    // The signature first (a leftover without the manifest), then the commit point.
    written
        .keys
        .push(crate::trust::signature_key(&manifest_key));
    if let Err(e) = crate::trust::put_signature(store, &ctx.signing, &manifest_key, &json).await {
        cleanup(store, &manifest_key, written).await;
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
        cleanup(store, &manifest_key, written).await;
        return Err(e);
    }
    Ok(())
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
