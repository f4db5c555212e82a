//! Format 2: the archive in sections, streamed into PostgreSQL.
//!
//! 1. pre-data: the object is piped, SHA-256 + age + zstd on a blocking thread, into one
//!    `pg_restore` reading its stdin (a single pg_restore reads a pipe in archive order);
//! 2. data: every stream the same way, up to `--jobs` at once, each its own `pg_restore`;
//! 3. post-data: decoded into a small private temp file, then `pg_restore -j N` (parallel
//!    restore needs a seekable file).
//!
//! Nothing but the post-data archive touches the disk. A selective restore stages what it
//! filters (`pg_restore -L` needs the archive's list first): the pre-data, the data streams
//! that hold a selected table, the post-data.
//!
//! Any stream that fails — a digest, authentication or decode failure, a `pg_restore` that
//! dies, a lock wait given up, a signal — stops every stream ([`Stopper`]): the children are
//! stopped as process groups and their sessions ended. A database this restore created is
//! then dropped; an existing one is reported as partially restored with the command to retry.
//!
//! The section objects, what a restore reads of them and the types shared with the siblings
//! (`to_file`, `select`, `leave`) are in `layout`; one section's pg_restore is `step`. The
//! order of the steps ([`order_steps`]) and the target's part ([`into_target`]) serve
//! `live` too: sections dumped from the sandbox of a point-in-time restore.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use dr_catalog::{BackupDetails, ObjectRecord};
use futures::StreamExt;

use super::clean::drop_foreign_keys_to_replaced;
use super::fetch::{check_objects, fetch_files, width};
use super::globals::apply_globals;
use super::layout::{
    data_file, is_selective, selected_streams, temp_needed, Load, Section, Sections, Source,
    POST_FILE, PRE_FILE,
};
use super::leave::leave_target;
use super::load::{
    count_and_compare, create_database, find_pg_restore, pg_restore_output, restore_session_name,
    watch_lock_waits, Outcome,
};
use super::select::select_lists;
use super::step::Run;
use super::stop::Stopper;
use super::target::check_space;
use super::RestoreOptions;
use crate::{Error, Kind, Result};

/// Restore a format-2 backup into `l.target`: staging and checks first, then the three
/// steps; on failure the target is left as the returned error says.
pub(super) async fn restore_sections(
    l: &Load<'_>,
    s: Sections<'_>,
    seconds: &mut BTreeMap<String, f64>,
) -> Result<Outcome> {
    let selective = is_selective(l.opts);
    let streams = selected_streams(l.details, l.opts, s.data.len());
    let pg_restore = find_pg_restore(l.ctx, l.origin, l.target)?;

    // Before the target is touched: check (--check-first) and stage what is read from files.
    let fetch_clock = Instant::now();
    let (dir, _staging) = stage(l, &s, selective, &streams).await?;
    let (steps, skipped_foreign_keys) =
        plan_steps(l, &s, &pg_restore.path, &dir, &streams, selective).await?;
    seconds.insert("fetch_decrypt".into(), fetch_clock.elapsed().as_secs_f64());

    let restore_clock = Instant::now();
    let outcome = into_target(
        l,
        &pg_restore.path,
        &dir,
        steps,
        None,
        restore_clock,
        seconds,
    )
    .await?;
    Ok(Outcome {
        skipped_foreign_keys,
        ..outcome
    })
}

/// Where the sections read from files are: the `--to-file` directory, or a temp dir they
/// are staged in (kept until the restore ends: the second value). With `--check-first`, the
/// piped objects are checked here too; nothing touches the target yet.
async fn stage(
    l: &Load<'_>,
    s: &Sections<'_>,
    selective: bool,
    streams: &[usize],
) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(d) = l.files_in {
        return Ok((d.to_path_buf(), None));
    }
    check_space(
        l.temp_dir,
        temp_needed(s, l.details, l.opts),
        "the staged sections",
    )?;
    let staging = super::layout::staging_dir(l.temp_dir)?;
    let dir = staging.path().to_path_buf();
    if l.check_first {
        // The staged objects are checked as they are staged.
        let piped: Vec<&ObjectRecord> = if selective {
            Vec::new()
        } else {
            std::iter::once(s.pre).chain(s.data.iter()).collect()
        };
        tracing::info!(
            objects = piped.len() + 1,
            "checking every object of {} before touching the target",
            l.origin.what
        );
        check_objects(l.ctx, &piped, l.identities, l.jobs).await?;
    }
    let mut files: Vec<(&ObjectRecord, PathBuf)> = vec![(s.post, dir.join(POST_FILE))];
    if selective {
        files.push((s.pre, dir.join(PRE_FILE)));
        for &i in streams {
            files.push((&s.data[i], dir.join(data_file(i + 1))));
        }
    }
    fetch_files(l.ctx, &files, l.identities, l.jobs, false)
        .await
        .map_err(|e| {
            let mut e = e;
            e.details
                .push("the target was not touched: nothing was changed".to_string());
            e
        })?;
    Ok((dir, Some(staging)))
}

/// The steps to run, in order: pre-data, the data streams, post-data, then its foreign
/// keys alone; each section with its selective list. Returns them with the foreign keys a
/// selection leaves out.
async fn plan_steps<'a>(
    l: &Load<'_>,
    s: &Sections<'a>,
    pg_restore: &Path,
    dir: &Path,
    streams: &[usize],
    selective: bool,
) -> Result<(Vec<Vec<Section<'a>>>, Vec<String>)> {
    let opts = l.opts;
    let from_files = l.files_in.is_some() || selective;
    let pre = Section {
        label: "pre-data".into(),
        source: if from_files {
            Source::File(dir.join(PRE_FILE))
        } else {
            Source::Pipe(s.pre)
        },
        list: None,
        jobs: 1,
        clean: opts.clean,
    };
    let data: Vec<Section<'a>> = streams
        .iter()
        .map(|&i| Section {
            label: format!("data-{}", i + 1),
            source: if from_files {
                Source::File(dir.join(data_file(i + 1)))
            } else {
                Source::Pipe(&s.data[i])
            },
            list: None,
            jobs: 1,
            // From PostgreSQL 17 on, large objects are created in the data section (BLOB
            // METADATA, in stream 1): --clean drops them there, or they collide.
            clean: opts.clean,
        })
        .collect();
    let post = Section {
        label: "post-data".into(),
        source: Source::File(dir.join(POST_FILE)),
        list: None,
        jobs: l.jobs,
        clean: false,
    };
    order_steps(opts, pg_restore, dir, pre, data, post, selective).await
}

/// The steps in order: pre-data, the data streams, post-data without its foreign keys, then
/// the foreign keys alone; with a selection, each section with its selective list. The
/// post-data archive is read from `dir` ([`POST_FILE`]). Returns them with the foreign keys
/// a selection leaves out.
pub(super) async fn order_steps<'a>(
    opts: &RestoreOptions,
    pg_restore: &Path,
    dir: &Path,
    mut pre: Section<'a>,
    mut data: Vec<Section<'a>>,
    mut post: Section<'a>,
    selective: bool,
) -> Result<(Vec<Vec<Section<'a>>>, Vec<String>)> {
    let mut skipped_foreign_keys = Vec::new();
    if selective {
        skipped_foreign_keys =
            select_lists(pg_restore, opts, &mut pre, &mut data, &mut post).await?;
    }
    // pg_restore -j orders the statements of one archive by the tables they lock, but a
    // post-data archive alone names no tables: two foreign keys between the same tables
    // (circular ones) would deadlock. Foreign keys go last, one at a time.
    let post_list = match post.list.take() {
        Some(l) => l,
        None => {
            pg_restore_output(
                pg_restore,
                vec!["--list".into(), dir.join(POST_FILE).display().to_string()],
            )
            .await?
        }
    };
    let (fks, rest): (Vec<&str>, Vec<&str>) = post_list
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .partition(|l| l.contains(" FK CONSTRAINT "));
    post.list = Some(rest.iter().map(|l| format!("{l}\n")).collect());
    let fk_section = Section {
        label: "post-data foreign keys".into(),
        source: Source::File(dir.join(POST_FILE)),
        list: Some(fks.iter().map(|l| format!("{l}\n")).collect()),
        jobs: 1,
        clean: false,
    };
    let mut steps = vec![vec![pre], data];
    if !rest.is_empty() {
        steps.push(vec![post]);
    }
    if !fks.is_empty() {
        steps.push(vec![fk_section]);
    }
    Ok((steps, skipped_foreign_keys))
}

/// The counts a restore is compared with when they are still being taken as it runs (a
/// live source counts in its snapshot meanwhile): awaited once the steps are done.
pub(super) type Counted<'a> = Pin<Box<dyn Future<Output = Result<BackupDetails>> + Send + 'a>>;

/// A live source's counts: `streamed` is told once no later step reads from the source (its
/// counting starts then), `counted` gives them.
pub(super) struct LiveCounts<'a> {
    pub streamed: tokio::sync::oneshot::Sender<()>,
    pub counted: Counted<'a>,
}

/// The target: globals, the database created when missing, the steps, then the counts
/// (`l.details`', or `counted`'s once it is ready). A database this restore created is
/// dropped on any failure, to the end.
pub(super) async fn into_target(
    l: &Load<'_>,
    pg_restore: &Path,
    dir: &Path,
    steps: Vec<Vec<Section<'_>>>,
    live: Option<LiveCounts<'_>>,
    restore_clock: Instant,
    seconds: &mut BTreeMap<String, f64>,
) -> Result<Outcome> {
    let (streamed, counted) = match live {
        Some(LiveCounts { streamed, counted }) => (Some(streamed), Some(counted)),
        None => (None, None),
    };
    let (ctx, opts) = (l.ctx, l.opts);
    let conn = &l.target.conn;
    let mut errors = Vec::new();
    if let Some(sql) = l.globals {
        errors.extend(apply_globals(conn, sql, l.opts, &l.origin.what).await?);
    }
    let created = !l.target.exists;
    if created {
        create_database(conn).await?;
    }
    let session_name = restore_session_name();
    let stopper = Stopper::new(&ctx.cancel);
    let loaded = load(l, pg_restore, dir, &session_name, &stopper, steps, streamed).await;
    let loaded = match loaded {
        Ok(errs) => {
            errors.extend(errs);
            Ok(())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = loaded {
        seconds.insert("restore".into(), restore_clock.elapsed().as_secs_f64());
        return Err(leave_target(l, created, &session_name, e).await);
    }
    seconds.insert("restore".into(), restore_clock.elapsed().as_secs_f64());
    // A database this restore created is dropped on any failure, to the end.
    // The counts: a live source's, if still being taken, then the target's.
    let count_clock = Instant::now();
    let live;
    let details = match counted {
        None => l.details,
        Some(counting) => match counting.await {
            Ok(d) => {
                live = d;
                &live
            }
            Err(e) if created => return Err(leave_target(l, created, &session_name, e).await),
            Err(e) => return Err(e),
        },
    };
    let counted = count_and_compare(ctx, conn, &session_name, details, opts, l.jobs).await;
    seconds.insert("count".into(), count_clock.elapsed().as_secs_f64());
    let (tables, mismatches) = match counted {
        Ok(c) => c,
        Err(e) if created => return Err(leave_target(l, created, &session_name, e).await),
        Err(e) => return Err(e),
    };
    if created && (!errors.is_empty() || !mismatches.is_empty()) {
        let e = super::finished_with_errors(&l.origin.what, conn, &errors, &mismatches, opts, true);
        return Err(leave_target(l, created, &session_name, e).await);
    }
    Ok(Outcome {
        errors,
        tables,
        mismatches,
        skipped_foreign_keys: Vec::new(),
    })
}

/// The three steps, each waiting for the one before; the sections of a step run at once
/// (up to `--jobs`). Returns every pg_restore error, or why the streams were stopped.
async fn load(
    l: &Load<'_>,
    pg_restore: &Path,
    dir: &Path,
    session_name: &str,
    stopper: &Stopper,
    steps: Vec<Vec<Section<'_>>>,
    mut streamed: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<Vec<String>> {
    let ctx = l.ctx;
    let conn = &l.target.conn;
    let child_conn = conn.with_application_name(session_name);
    let mut base = vec![
        "--no-password".to_string(),
        format!("--dbname={}", conn.dbname_arg()),
        "--verbose".to_string(),
    ];
    if l.opts.no_owner {
        base.push("--no-owner".into());
        base.push("--no-acl".into());
    }
    let lock_wait = ctx.config.restore.lock_wait_timeout_secs;
    let watcher = {
        let stopper = stopper.clone();
        let conn = conn.clone();
        let name = session_name.to_string();
        tokio::spawn(async move {
            let why = watch_lock_waits(
                conn.clone(),
                name,
                (lock_wait > 0).then(|| Duration::from_secs(lock_wait)),
            )
            .await;
            stopper.fail(
                Error::new(
                    Kind::Failed,
                    format!("the restore into {conn} was stopped: {why}"),
                )
                .with_hint("stop the application's connections to the target (or restore into a new database name), then restore again"),
            );
        })
    };
    if l.opts.clean {
        // Under the restore's session name: a DROP waiting for the application's lock is
        // reported (and given up on) like pg_restore's own waits.
        let dropped = tokio::select! {
            r = drop_foreign_keys_to_replaced(&child_conn, l.details) => r,
            () = stopper.token.cancelled() => Ok(()),
        };
        let stopped = dropped.and_then(|()| stopper.failure(ctx, conn).map_or(Ok(()), Err));
        if let Err(e) = stopped {
            watcher.abort();
            return Err(e);
        }
    }
    let spinner = crate::progress::spinner(ctx.progress, "restoring");
    let mut errors = Vec::new();
    let run = Run {
        l,
        pg_restore,
        dir,
        base: &base,
        child_conn: &child_conn,
        stop: stopper,
    };
    // The last step that reads from a live source: after it, the source may be counted.
    let last_dump = steps.iter().rposition(|step| {
        step.iter()
            .any(|s| matches!(s.source, Source::Dump(_) | Source::Rows(_)))
    });
    let mut tell_streamed = |done: Option<usize>| {
        if done >= last_dump {
            if let Some(tx) = streamed.take() {
                let _ = tx.send(());
            }
        }
    };
    if last_dump.is_none() {
        tell_streamed(None);
    }
    for (i, step) in steps.iter().enumerate() {
        let futs: Vec<_> = step.iter().map(|s| run.section(s)).collect();
        let mut work = futures::stream::iter(futs).buffer_unordered(width(l.jobs));
        while let Some(errs) = work.next().await {
            errors.extend(errs);
        }
        if stopper.token.is_cancelled() {
            break;
        }
        tell_streamed(Some(i));
    }
    watcher.abort();
    spinner.finish_and_clear();
    match stopper.failure(ctx, conn) {
        Some(mut e) => {
            // Errors pg_restore reported before the stop belong to the story.
            for err in errors.iter().take(20) {
                e.details.push(err.clone());
            }
            Err(e)
        }
        None => Ok(errors),
    }
}
