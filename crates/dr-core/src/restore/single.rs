//! A single archive (format 1): fetched whole into a local file (`pg_restore -j` needs a
//! seekable one), kept as `--to-file` when asked, then restored into the target.

use std::time::Instant;

use dr_catalog::ObjectRecord;

use super::fetch::{fetch_archive, private_file, ArchiveFile};
use super::load::restore_into;
use super::target::check_space;
use super::{finish, leave, Approved, Request, RestoreReport};
use crate::{Error, Kind, Result};

/// Fetch the archive, then restore it into the target (when there is one). A database this
/// restore created is dropped on any failure, as with sections.
pub(super) async fn restore_single(
    r: &Request<'_>,
    dump: &ObjectRecord,
    run: Approved,
) -> Result<RestoreReport> {
    let Approved {
        plan,
        target,
        globals_sql,
        mut seconds,
        started,
    } = run;
    let opts = r.opts;
    let fetch_clock = Instant::now();
    let archive = fetch_single(r, dump, target.is_none()).await?;
    seconds.insert("fetch_decrypt".into(), fetch_clock.elapsed().as_secs_f64());
    if let (Some(path), Some(_)) = (&opts.to_file, &target) {
        private_file(path)
            .and_then(|mut f| std::io::copy(&mut std::fs::File::open(archive.path())?, &mut f))
            .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", path.display())))?;
    }
    let Some(target) = target else {
        seconds.insert("total".into(), started.elapsed().as_secs_f64());
        return Ok(RestoreReport::not_restored(plan, seconds));
    };

    let restore_clock = Instant::now();
    let mut created = false;
    let outcome = restore_into(
        r.ctx,
        r.m,
        r.details,
        &target,
        archive.path(),
        globals_sql.as_deref(),
        r.jobs,
        opts,
        &mut created,
    )
    .await;
    seconds.insert("restore".into(), restore_clock.elapsed().as_secs_f64());
    drop(archive);
    let what = format!("backup {}", r.m.id);
    let result =
        outcome.and_then(|o| finish(plan, &target, o, seconds, started, &what, opts, created));
    match result {
        // A database this restore created is dropped on any failure, as with sections.
        Err(e) if created => {
            Err(leave::drop_created(&target.conn, target.major, opts.with_globals, e).await)
        }
        r => r,
    }
}

/// The archive as a local file: `--to-file` without a target decodes straight into the
/// destination; otherwise a temp file in the temp dir (checked for room first).
async fn fetch_single(
    r: &Request<'_>,
    dump: &ObjectRecord,
    no_target: bool,
) -> Result<ArchiveFile> {
    match (&r.opts.to_file, no_target) {
        (Some(path), true) => {
            let partial = path.with_extension("partial");
            fetch_archive(r.ctx, dump, r.identities, &partial, true).await?;
            std::fs::rename(&partial, path).map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!("moving the archive to {}: {e}", path.display()),
                )
            })?;
            Ok(ArchiveFile::Kept(path.clone()))
        }
        _ => {
            let temp_dir = &r.temp_dir;
            check_space(temp_dir, dump.raw_bytes, "the decrypted archive")?;
            let tmp = tempfile::Builder::new()
                .prefix("dr-restore-")
                .suffix(".dump")
                .tempfile_in(temp_dir)
                .map_err(|e| {
                    Error::new(
                        Kind::Failed,
                        format!("cannot create a temp file in {}: {e}", temp_dir.display()),
                    )
                    .with_hint("pass --temp-dir DIR")
                })?;
            let path = tmp.path().to_path_buf();
            fetch_archive(r.ctx, dump, r.identities, &path, false).await?;
            Ok(ArchiveFile::Temp(tmp))
        }
    }
}
