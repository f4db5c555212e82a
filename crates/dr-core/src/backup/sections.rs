//! The archive's sections as pg_dump streams: pre-data, the data streams, post-data, each
//! `pg_dump -Fc -Z0 --section=…` → zstd → age → its own multipart upload, all in the
//! backup's snapshot. The first failure stops the others.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dr_catalog::{
    keys, BackupId, ObjectRecord, ObjectRole, STEP_DATA, STEP_POST_DATA, STEP_PRE_DATA,
};
use dr_pg::{ChildProcess, ConnInfo, Tool};
use dr_store::StreamPlan;
use dr_stream::{Compression, Recipients};

use super::chunks::Chunks;

use crate::{human_bytes, Context, Error, Kind, Result};

/// One section stream of the archive: which part of `pg_dump` goes into which object.
pub(super) struct SectionJob {
    role: ObjectRole,
    pub(super) key: String,
    step: u32,
    /// For logs and errors: "pre-data", "data-2 of 3", "post-data".
    label: String,
    /// `--section=…` and the stream's table selection.
    args: Vec<String>,
    /// The keys of the section's objects after the first, as their uploads start: the
    /// run deletes them if it fails.
    pub(super) more_keys: Mutex<Vec<String>>,
}

/// pre-data, every data stream, post-data: in restore order.
pub(super) fn sections_to_dump(
    target: &str,
    id: &BackupId,
    split: &dr_pg::DataSplit,
) -> Vec<SectionJob> {
    let n = split.streams.len();
    let mut jobs = vec![SectionJob {
        role: ObjectRole::PreData,
        key: keys::object(target, id, keys::PRE_DATA),
        step: STEP_PRE_DATA,
        label: "pre-data".into(),
        args: vec!["--section=pre-data".into()],
        more_keys: Mutex::default(),
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
            more_keys: Mutex::default(),
        });
    }
    jobs.push(SectionJob {
        role: ObjectRole::PostData,
        key: keys::object(target, id, keys::POST_DATA),
        step: STEP_POST_DATA,
        label: "post-data".into(),
        args: vec!["--section=post-data".into()],
        more_keys: Mutex::default(),
    });
    jobs
}

/// Every section, each its own pg_dump and upload: all at once, or (`schema_first`)
/// pre-data and post-data first, then the data streams. The first failure stops the others
/// (their uploads aborted, their pg_dumps stopped) and is the error reported; the records
/// come back in `jobs` order.
#[allow(clippy::too_many_arguments)]
pub(super) async fn dump_sections(
    ctx: &Context,
    conn: &ConnInfo,
    session_name: &str,
    pg_dump: &Tool,
    snapshot: &str,
    jobs: &[SectionJob],
    schema_first: bool,
    plan: StreamPlan,
    recipients: &Arc<Recipients>,
) -> Result<Vec<ObjectRecord>> {
    let siblings = ctx.cancel.child_token();
    let sctx = ctx.with_cancel(siblings.clone());
    let bar = crate::progress::bytes_bar(ctx.progress, "dumping", None);
    // The pg_dumps' sessions have the run's name (`session_name`), to end them if the run
    // stops: a killed pg_dump's backend queued behind a table lock waits on, unaware its
    // client is gone.
    let admin_conn = conn;
    let conn = &conn.with_application_name(session_name);
    let results = if schema_first {
        let is_data = |j: &&SectionJob| j.role == ObjectRole::Data;
        let schema: Vec<&SectionJob> = jobs.iter().filter(|j| !is_data(j)).collect();
        let mut schema = dump_phase(
            &sctx, &siblings, conn, pg_dump, snapshot, schema, plan, recipients, &bar,
        )
        .await
        .into_iter();
        let data: Vec<&SectionJob> = jobs.iter().filter(is_data).collect();
        let mut data = dump_phase(
            &sctx, &siblings, conn, pg_dump, snapshot, data, plan, recipients, &bar,
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
            &sctx, &siblings, conn, pg_dump, snapshot, all, plan, recipients, &bar,
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
    if first_error.is_some() {
        // Bounded: when the server is what failed (down, partitioned) this cannot succeed,
        // and the server ends those sessions itself once their connections time out.
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            dr_pg::end_sessions(admin_conn, session_name, Duration::from_secs(4)),
        )
        .await;
        match ended {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::error!(
                "{n} session(s) of the stopped pg_dumps are still on the server (application_name `{session_name}`)"
            ),
            Ok(Err(e)) => tracing::warn!("could not end the stopped pg_dumps' sessions: {e}"),
            Err(_) => tracing::warn!(
                "could not end the stopped pg_dumps' sessions within 5 s (application_name `{session_name}`); the server ends them when their connections time out"
            ),
        }
    }
    match first_error {
        Some(_) if ctx.cancel.is_cancelled() => Err(Error::interrupted("the backup")),
        Some(e) => Err(e),
        None => Ok(records),
    }
}

/// A name no other session on the server has: `dr-backup-PID-N`.
pub(super) fn backup_session_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "dr-backup-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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
    plan: StreamPlan,
    recipients: &Arc<Recipients>,
    bar: &indicatif::ProgressBar,
) -> Vec<Result<ObjectRecord>> {
    futures::future::join_all(phase.into_iter().map(|job| async move {
        if siblings.is_cancelled() {
            return Err(Error::interrupted("the backup"));
        }
        let r = stream_dump(sctx, conn, pg_dump, snapshot, job, plan, recipients, bar).await;
        if r.is_err() {
            siblings.cancel();
        }
        r
    }))
    .await
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
    plan: StreamPlan,
    recipients: &Arc<Recipients>,
    bar: &indicatif::ProgressBar,
) -> Result<ObjectRecord> {
    let key = job.key.as_str();
    let (mut child, input) = spawn_pg_dump(ctx, conn, pg_dump, snapshot, job)?;
    let mut upload = Chunks::new(ctx.store.as_ref(), key, plan, &job.more_keys);
    if let Err(e) = upload.start().await {
        child.kill();
        let _ = child.wait().await;
        return Err(e);
    }

    let (mut rx, encoder) = spawn_encoder(ctx, input, recipients, plan.part_size, bar);
    // Upload parts as they come; stop at the first error or signal.
    let upload_error = upload_parts(ctx, &mut upload, &mut rx).await;
    drop(rx);
    if upload_error.is_some() {
        child.kill();
    }
    let encoded = encoder.finish().await;
    let dumped = child.wait().await;

    let dr_stream::EncodedParts { stats, parts } =
        match section_outcome(job, upload_error, dumped, encoded) {
            Ok(v) => v,
            Err(e) => {
                upload.abort().await;
                return Err(e);
            }
        };
    if ctx.cancel.is_cancelled() {
        upload.abort().await;
        return Err(Error::interrupted("the backup"));
    }
    let mut chunks = upload.finish(stats.stored_bytes).await?;
    tracing::info!(
        section = %job.label,
        raw = %human_bytes(stats.raw_bytes), stored = %human_bytes(stats.stored_bytes), parts,
        objects = chunks.len(),
        "section uploaded"
    );
    if chunks.len() == 1 {
        // One object: recorded as every dr has (format 2).
        chunks.clear();
    }
    Ok(ObjectRecord {
        role: job.role,
        key: key.to_string(),
        bytes: stats.stored_bytes,
        sha256: stats.sha256,
        raw_bytes: stats.raw_bytes,
        part_bytes: Some(plan.part_size),
        restore_step: Some(job.step),
        chunks,
    })
}

/// Start `pg_dump` for `job` in `snapshot`; its stdout as a file for the encoding thread.
fn spawn_pg_dump(
    ctx: &Context,
    conn: &ConnInfo,
    pg_dump: &Tool,
    snapshot: &str,
    job: &SectionJob,
) -> Result<(ChildProcess, std::fs::File)> {
    let args = pg_dump_args(
        conn,
        snapshot,
        &job.args,
        ctx.config.backup.lock_wait_timeout_secs,
    );
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
    Ok((child, std::fs::File::from(stdout)))
}

/// `pg_dump` of one section (`section`: `--section=…` and its tables) in `snapshot`, as a
/// custom-format archive on stdout: what a backup stores and a point-in-time restore pipes
/// from its sandbox. `lock_wait`: seconds a table lock is waited for (0: as long as it takes).
pub(crate) fn pg_dump_args(
    conn: &ConnInfo,
    snapshot: &str,
    section: &[String],
    lock_wait: u64,
) -> Vec<String> {
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
    args.extend(section.iter().cloned());
    // The same wait bound as the counting in the snapshot.
    if lock_wait > 0 {
        args.push(format!(
            "--lock-wait-timeout={}",
            lock_wait.saturating_mul(1000)
        ));
    }
    args
}

/// zstd → age on a blocking thread, cutting the archive into parts of `part_size` for the
/// upload (one in flight: memory stays bounded); `bar` counts raw bytes.
fn spawn_encoder(
    ctx: &Context,
    input: std::fs::File,
    recipients: &Arc<Recipients>,
    part_size: u64,
    bar: &indicatif::ProgressBar,
) -> (tokio::sync::mpsc::Receiver<Bytes>, dr_stream::Encoding) {
    let compression = Compression {
        level: ctx.config.backup.zstd_level,
        threads: ctx.config.backup.zstd_threads,
    };
    let bar = bar.clone();
    let mut shown = 0;
    dr_stream::encode_into_parts(
        input,
        Arc::clone(recipients),
        compression,
        part_size,
        move |n| {
            bar.inc(n - shown);
            shown = n;
        },
    )
}

/// Upload the parts as they come until the encoder is done; the first upload error or a
/// signal stops it (returned). A full object is completed before the next part, whatever a
/// signal says meanwhile (its upload is then complete, not left behind).
async fn upload_parts(
    ctx: &Context,
    upload: &mut Chunks<'_>,
    rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
) -> Option<Error> {
    loop {
        // Room in the upload first: a part taken from the encoder is uploaded at once, so
        // the stream holds no part that is neither being filled, queued or uploaded.
        let ready = tokio::select! {
            r = upload.ready() => r,
            _ = ctx.cancel.cancelled() => {
                return Some(Error::interrupted("the backup"));
            }
        };
        if let Err(e) = ready {
            return Some(e);
        }
        tokio::select! {
            part = rx.recv() => match part {
                Some(p) => {
                    if let Err(e) = upload.roll_over().await {
                        return Some(e);
                    }
                    // A part can take minutes on a slow link: a signal must not wait for it.
                    let put = tokio::select! {
                        r = upload.put_part(p) => r,
                        _ = ctx.cancel.cancelled() => {
                            return Some(Error::interrupted("the backup"));
                        }
                    };
                    if let Err(e) = put {
                        return Some(e);
                    }
                }
                None => return None,
            },
            _ = ctx.cancel.cancelled() => {
                return Some(Error::interrupted("the backup"));
            }
        }
    }
}

/// The section's result from the upload, pg_dump and the encoder: the first failure, in
/// that order (pg_dump's is named after the section, with a hint for a full lock table).
fn section_outcome(
    job: &SectionJob,
    upload_error: Option<Error>,
    dumped: std::result::Result<dr_pg::Finished, dr_pg::PgError>,
    encoded: std::result::Result<dr_stream::EncodedParts, dr_stream::StreamError>,
) -> Result<dr_stream::EncodedParts> {
    match (upload_error, dumped, encoded) {
        (Some(e), _, _) => Err(e),
        (None, Err(e), _) => {
            let mut e = Error::from(e).context(format!(
                "pg_dump ({}) failed; the archive is incomplete",
                job.label
            ));
            // The lock table is full: pg_dump locks every table it dumps in one transaction.
            if e.hint.is_none() && e.to_string().contains("out of shared memory") {
                e.hint = Some("pg_dump locks every table it dumps in one transaction, and the row counting does too: raise max_locks_per_transaction in postgresql.conf and restart the server; `dr check` says whether the lock table is big enough".into());
            }
            Err(e)
        }
        (None, Ok(_), Err(e)) => Err(Error::from(e).context(format!(
            "compressing and encrypting the dump ({})",
            job.label
        ))),
        (None, Ok(_), Ok(v)) => Ok(v),
    }
}
