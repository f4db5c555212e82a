//! pg_basebackup's tar stream into the repository: stdout → [`TarTap`] (copies out
//! `backup_label` and `backup_manifest`) → zstd → age → parts of one fixed size, stored as
//! objects of bounded size as a dump's sections are ([`Chunks`]): memory is the same at any
//! cluster size. Its wait for WAL archiving bounded, its walsender ended if it is stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dr_catalog::{BackupId, ObjectRecord, ObjectRole};
use dr_pg::basebackup::{self, TarFindings, TarTap};
use dr_pg::{ChildProcess, ConnInfo, Tool};
use dr_store::StreamPlan;
use dr_stream::{Compression, Recipients};

use super::wal::NOT_ARCHIVED_HINT;
use crate::backup::chunks::Chunks;
use crate::{human_bytes, Context, Error, Kind, Result};

/// What streaming the base backup gave: the tar's record, what the tap found, stderr.
pub(super) type Streamed = (ObjectRecord, TarFindings, Vec<String>);

/// Run pg_basebackup and stream its tar into `key` (and `key.0002`, … past one object's
/// parts: each named in `more_keys` as it starts, for the failed run's cleanup).
/// pg_basebackup's own wait for archiving is bounded by `wait` (it is stopped past that:
/// exit 3).
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_base(
    ctx: &Context,
    pg_basebackup: &Tool,
    cluster_conn: &ConnInfo,
    key: &str,
    id: &BackupId,
    plan: StreamPlan,
    recipients: &Arc<Recipients>,
    wait: Duration,
    more_keys: &Mutex<Vec<String>>,
) -> Result<Streamed> {
    let label = format!("dr {id}");
    // Its walsender has a name of its own, to end it if the run stops: one waiting in
    // pg_backup_stop for archiving notices a lost client only when it next writes to it.
    let session = format!("dr-basebackup-{}-{id}", std::process::id());
    let conn = cluster_conn.with_application_name(&session);
    let args = basebackup::basebackup_args(&conn, &label);
    let mut child = ChildProcess::spawn(
        &pg_basebackup.path,
        &args,
        Some(&conn),
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    )?;
    let stdout = child
        .stdout()
        .ok_or_else(|| Error::new(Kind::Failed, "pg_basebackup has no stdout"))?
        .into_owned_fd()
        .map_err(|e| Error::new(Kind::Failed, format!("pg_basebackup stdout: {e}")))?;
    let mut upload = Chunks::new(ctx.store.as_ref(), key, plan, more_keys);
    if let Err(e) = upload.start().await {
        child.kill();
        let _ = child.wait().await;
        return Err(e);
    }
    let (tap, findings) = TarTap::new(std::fs::File::from(stdout));
    let bar = crate::progress::bytes_bar(ctx.progress, "base backup", None);
    let compression = Compression {
        level: ctx.config.backup.zstd_level,
        threads: ctx.config.backup.zstd_threads,
    };
    let progress = {
        let bar = bar.clone();
        let mut shown = 0;
        move |n| {
            bar.inc(n - shown);
            shown = n;
        }
    };
    let (mut rx, encoder) = dr_stream::encode_into_parts(
        tap,
        Arc::clone(recipients),
        compression,
        plan.part_size,
        progress,
    );
    let upload_error = upload_parts(ctx, &child, &mut upload, &mut rx, wait).await;
    drop(rx);
    if upload_error.is_some() {
        child.kill();
    }
    let encoded = encoder.finish().await;
    let stderr = child.stderr_so_far();
    let done = child.wait().await;
    bar.finish_and_clear();
    let outcome = match (upload_error, done, encoded) {
        (Some(e), _, _) => Err(e),
        (None, Err(e), _) => Err(basebackup_failed(e)),
        (None, Ok(_), Err(e)) => {
            Err(Error::from(e).context("compressing and encrypting the base backup"))
        }
        (None, Ok(_), Ok(v)) if ctx.cancel.is_cancelled() => {
            let _ = v;
            Err(Error::interrupted("the backup"))
        }
        (None, Ok(_), Ok(v)) => Ok(v),
    };
    let parts = match outcome {
        Ok(v) => v,
        Err(e) => {
            upload.abort().await;
            end_walsender(cluster_conn, &session).await;
            return Err(e);
        }
    };
    let dr_stream::EncodedParts { stats, parts } = parts;
    let mut chunks = upload.finish(stats.stored_bytes).await?;
    tracing::info!(raw = %human_bytes(stats.raw_bytes), stored = %human_bytes(stats.stored_bytes), parts, objects = chunks.len(), "base backup uploaded");
    if chunks.len() == 1 {
        // One object: recorded as every dr has (format 3).
        chunks.clear();
    }
    let findings = findings.lock().map(|f| f.clone()).unwrap_or_default();
    let record = ObjectRecord {
        role: ObjectRole::BaseTar,
        key: key.to_string(),
        bytes: stats.stored_bytes,
        sha256: stats.sha256,
        raw_bytes: stats.raw_bytes,
        part_bytes: Some(plan.part_size),
        restore_step: None,
        chunks,
    };
    Ok((record, findings, stderr))
}

/// End the walsender of a stopped pg_basebackup (bounded: the server may be what failed).
async fn end_walsender(conn: &ConnInfo, session: &str) {
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        dr_pg::end_sessions(conn, session, Duration::from_secs(4)),
    )
    .await;
    match ended {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!("{n} session(s) of the stopped pg_basebackup are still on the server (application_name `{session}`)"),
        Ok(Err(e)) => tracing::warn!("could not end the stopped pg_basebackup's session: {e}"),
        Err(_) => tracing::warn!("could not end the stopped pg_basebackup's session within 5 s (application_name `{session}`)"),
    }
}

/// pg_basebackup failed: its command, status and stderr, with the line to change when the
/// server refused the replication connection.
fn basebackup_failed(e: dr_pg::PgError) -> Error {
    let hint = basebackup::failure_hint(&e.to_string());
    let e = match e {
        // Its command, status and stderr once (as message and details, not again as a cause).
        dr_pg::PgError::Failed(f) => Error::new(Kind::Failed, f.to_string()).retryable(f.transient),
        other => Error::from(other),
    }
    .context("pg_basebackup failed; nothing was committed");
    match hint {
        Some(h) => e.with_hint(h),
        None => e,
    }
}

/// Upload the parts as they come until the encoder is done. Stops at the first upload
/// error, a signal, or when pg_basebackup has waited for WAL archiving longer than `wait`.
async fn upload_parts(
    ctx: &Context,
    child: &ChildProcess,
    upload: &mut Chunks<'_>,
    rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
    wait: Duration,
) -> Option<Error> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut waiting_since: Option<Instant> = None;
    loop {
        // Room in the upload before the next part is taken (one part fewer in memory).
        let ready = tokio::select! {
            r = upload.ready() => r,
            () = ctx.cancel.cancelled() => return Some(Error::interrupted("the backup")),
        };
        if let Err(e) = ready {
            return Some(e);
        }
        tokio::select! {
            part = rx.recv() => match part {
                Some(p) => {
                    // A full object is completed before the next part, whatever a signal
                    // says meanwhile (its upload is then complete, not left behind).
                    if let Err(e) = upload.roll_over().await {
                        return Some(e);
                    }
                    let put = tokio::select! {
                        r = upload.put_part(p) => r,
                        () = ctx.cancel.cancelled() => return Some(Error::interrupted("the backup")),
                    };
                    if let Err(e) = put {
                        return Some(e);
                    }
                }
                None => return None,
            },
            _ = tick.tick() => {
                let waiting = child
                    .stderr_so_far()
                    .iter()
                    .any(|l| l.contains(basebackup::WAITING_FOR_ARCHIVE));
                if !waiting {
                    continue;
                }
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= wait {
                    return Some(Error::new(
                        Kind::Unavailable,
                        format!(
                            "the server waited {}s for its WAL to be archived (pg_backup_stop) and archiving did not finish; pg_basebackup was stopped and the backup was not committed",
                            wait.as_secs()
                        ),
                    )
                    .with_hint(format!("{NOT_ARCHIVED_HINT}; the server log names the failing segment")));
                }
            }
            () = ctx.cancel.cancelled() => return Some(Error::interrupted("the backup")),
        }
    }
}
