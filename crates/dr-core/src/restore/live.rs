//! A database restored from a live server — the sandbox of `dr restore --at … --to URL` —
//! with the steps of a backup in sections.
//!
//! Everything is read in one exported snapshot of the source, held until the last reader
//! has started. The pre-data is `pg_dump --section=pre-data | pg_restore`. The rows are
//! copied by dr itself (`rows`: `COPY … TO STDOUT` into `COPY … FROM STDIN` by `--jobs`
//! workers, frozen into a new database) and counted as they pass, beside one
//! `pg_dump --section=data --exclude-table-data …` of the rest (sequence values, large
//! objects). The post-data is dumped into a small temp file first (`pg_restore -j` and the
//! foreign keys last, as `sections` orders them). A source older than PostgreSQL 14 is
//! dumped as `dr backup` dumps it instead: the data split into `--jobs` streams by size,
//! each `pg_dump --section=data -t … | pg_restore`, the rows counted in the snapshot once
//! the streams are done. A `--table`/`--schema` restore stages what it filters — the
//! pre-data, the data streams holding the selection, the post-data — and filters them as a
//! stored backup's.
//!
//! Everything on the target's side is `sections`': the database created when missing and
//! dropped on any failure, `--clean` and its foreign keys, lock waits watched, every stream
//! stopped at the first failure, the count comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dr_catalog::BackupDetails;
use dr_pg::{ChildProcess, ConnInfo, DataSplit, Snapshot, Tool};
use dr_stream::Identities;
use futures::StreamExt;

use super::fetch::width;
use super::layout::{
    data_file, is_selective, selected_streams, DumpCommand, Load, Origin, Section, Source,
    POST_FILE, PRE_FILE,
};
use super::load::{find_pg_restore, Outcome};
use super::plan::{check_names, Plan};
use super::rows::Rows;
use super::sections::{into_target, order_steps, Counted, LiveCounts};
use super::target::TargetState;
use super::{finish, globals, RestoreOptions, RestoreReport};
use crate::backup::sections::pg_dump_args;
use crate::backup::write::{details_of, dump_globals};
use crate::{Context, Error, Kind, Result};

/// A restore from a live server: the source, its tools, and what the operator asked.
pub(super) struct Live<'a> {
    pub ctx: &'a Context,
    /// The database restored from (the sandbox's socket).
    pub source: &'a ConnInfo,
    pub pg_dump: &'a Tool,
    pub pg_dumpall: &'a Tool,
    pub origin: &'a Origin,
    pub identities: &'a Identities,
    pub target: &'a TargetState,
    pub opts: &'a RestoreOptions,
    pub jobs: u32,
    pub temp_dir: &'a Path,
    /// Told once the source is no longer needed (its streams done, its counts taken, its
    /// snapshot ended); dropped untold when the restore stops first.
    pub free: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Restore `l.source` into `l.target`: checks first (the selection names something there,
/// the owners exist), nothing on the target before them.
pub(super) async fn restore(
    l: &Live<'_>,
    plan: Plan,
    mut seconds: BTreeMap<String, f64>,
    started: Instant,
) -> Result<RestoreReport> {
    let ctx = l.ctx;
    let session = format!("dr-restore-source-{}", std::process::id());
    let snapshot = Snapshot::begin(
        &l.source.with_application_name(&session),
        Duration::ZERO,
        None,
    )
    .await
    .map_err(|e| Error::from(e).context(format!("opening a snapshot of {}", l.origin.what)))?;
    let (split, outline) = match open(ctx, &snapshot, l.jobs).await {
        Ok(v) => v,
        Err(e) => return Err(e.context(format!("reading {}", l.origin.what))),
    };
    let details = details_of(outline.clone(), None, &split, Vec::new());
    check_names(&details, l.opts, &l.origin.what, &tables_hint(&details))?;
    if !l.opts.with_globals && !l.opts.no_owner {
        l.target.check_owners(&details).await?;
    }
    let globals = if l.opts.with_globals {
        Some(globals_of(l).await?)
    } else {
        None
    };

    let clock = Instant::now();
    let staging = super::layout::staging_dir(l.temp_dir)?;
    let dir = staging.path();
    let selective = is_selective(l.opts);
    let streams = selected_streams(&details, l.opts, split.streams.len());
    let snapshot_id = snapshot.id().to_string();
    let dump = |section: Vec<String>| DumpCommand {
        pg_dump: l.pg_dump.path.clone(),
        conn: l.source.with_application_name(&session),
        args: pg_dump_args(l.source, &snapshot_id, &section, 0),
    };
    let rows = if selective {
        None
    } else {
        rows_of(&snapshot, l, &session).await?
    };
    let (pre, data, post) = sections(&dump, &split, &streams, rows.as_ref(), l, dir);
    stage(
        l,
        [&pre, &post].into_iter().chain(data.iter()),
        &dump,
        &split,
        dir,
    )
    .await?;
    seconds.insert("dump_staged".into(), clock.elapsed().as_secs_f64());
    let pg_restore = find_pg_restore(ctx, l.origin, l.target)?;
    let (steps, skipped_foreign_keys) =
        order_steps(l.opts, &pg_restore.path, dir, pre, data, post, selective).await?;

    // Copied rows were counted as they were read. Without them, the counting runs in the
    // snapshot once no stream reads the source any more (on two cores a count beside the
    // streams slows them as much as it takes), beside the post-data. Then the snapshot ends
    // and the source is free (`l.free`: the sandbox is removed while the target is still
    // being finished).
    let (streamed, source_done) = tokio::sync::oneshot::channel::<()>();
    let free = l.free.lock().ok().and_then(|mut f| f.take());
    let counting = Aborting(tokio::spawn(async move {
        let counted = match source_done.await {
            // The copied rows were counted as they were read.
            Ok(()) => Some(match rows {
                Some(rows) => rows.counts(),
                None => snapshot
                    .count_rows()
                    .await
                    .map_err(|e| Error::from(e).context("counting rows in the sandbox's snapshot")),
            }),
            // The restore stopped before its streams were done: nothing to count.
            Err(_) => None,
        };
        snapshot.finish().await;
        if let Some(free) = free {
            let _ = free.send(());
        }
        counted
    }));
    let counted: Counted<'_> = Box::pin(async move {
        let counted = counting.join().await?.ok_or_else(|| {
            Error::new(
                Kind::Failed,
                "the source was not counted: the restore stopped first",
            )
        })?;
        let mut outline = outline;
        outline.tables = counted?;
        Ok(details_of(outline, None, &split, Vec::new()))
    });
    let load = Load {
        ctx,
        origin: l.origin,
        details: &details,
        identities: l.identities,
        target: l.target,
        opts: l.opts,
        jobs: l.jobs,
        globals: globals.as_deref(),
        temp_dir: l.temp_dir,
        files_in: None,
        check_first: false,
    };
    let outcome = into_target(
        &load,
        &pg_restore.path,
        dir,
        steps,
        Some(LiveCounts { streamed, counted }),
        Instant::now(),
        &mut seconds,
    )
    .await?;
    drop(staging);
    let outcome = Outcome {
        skipped_foreign_keys,
        ..outcome
    };
    finish(
        plan,
        l.target,
        outcome,
        seconds,
        started,
        &l.origin.what,
        l.opts,
        false,
    )
}

/// The data streams (by table size, `jobs` of them) and the inventory without counts.
async fn open(
    ctx: &Context,
    snapshot: &Snapshot,
    jobs: u32,
) -> Result<(DataSplit, dr_pg::Inventory)> {
    let read = async {
        let sizes = snapshot.table_sizes().await?;
        let outline = snapshot.outline().await?;
        Ok::<_, dr_pg::PgError>((dr_pg::split_data(&sizes, jobs), outline))
    };
    tokio::select! {
        r = read => r.map_err(Error::from),
        () = ctx.cancel.cancelled() => Err(Error::new(Kind::Interrupted, "the restore was interrupted by a signal; nothing was changed")),
    }
}

/// The rows dr copies itself: every table's, unless the sandbox is older than PostgreSQL 14
/// or holds more tables than one pg_dump command line can leave out (then pg_dump carries
/// them as a stored backup's streams).
async fn rows_of(snapshot: &Snapshot, l: &Live<'_>, session: &str) -> Result<Option<Arc<Rows>>> {
    let tables = dr_pg::copy::copy_tables(snapshot)
        .await
        .map_err(|e| Error::from(e).context(format!("reading {}", l.origin.what)))?;
    Ok(tables
        .filter(|t| t.len() <= dr_pg::MAX_SPLIT_TABLES)
        .map(|tables| {
            Arc::new(Rows::new(
                l.source.with_application_name(session),
                snapshot.id().to_string(),
                tables,
                l.jobs,
                // Frozen only where nobody else's rows can be: a database this restore creates.
                if l.target.exists {
                    dr_pg::copy::Freeze::No
                } else {
                    dr_pg::copy::Freeze::Yes
                },
            ))
        }))
}

/// pre-data, the data, post-data. Without a selection the pre-data and data are piped from
/// their pg_dumps — or, with `rows`, the tables' rows are copied by `--jobs` workers beside
/// one pg_dump of the rest of the data section; the post-data (and, with a selection, every
/// section, in `streams`) is read from a file in `dir`, written by [`stage`].
fn sections<'a>(
    dump: &impl Fn(Vec<String>) -> DumpCommand,
    split: &DataSplit,
    streams: &[usize],
    rows: Option<&Arc<Rows>>,
    l: &Live<'_>,
    dir: &Path,
) -> (Section<'a>, Vec<Section<'a>>, Section<'a>) {
    let selective = is_selective(l.opts);
    let source = |label: &str, file: PathBuf| {
        if selective {
            Source::File(file)
        } else {
            Source::Dump(Box::new(dump(section_args(label, split))))
        }
    };
    let pre = Section {
        label: "pre-data".into(),
        source: source("pre-data", dir.join(PRE_FILE)),
        list: None,
        jobs: 1,
        clean: l.opts.clean,
    };
    let data = match rows {
        Some(rows) => copy_sections(dump, rows, l),
        None => streams
            .iter()
            .map(|&i| {
                let label = format!("data-{}", i + 1);
                Section {
                    source: source(&label, dir.join(data_file(i + 1))),
                    label,
                    list: None,
                    jobs: 1,
                    // PostgreSQL 17 creates large objects in the data section (see `sections`).
                    clean: l.opts.clean,
                }
            })
            .collect(),
    };
    let post = Section {
        label: "post-data".into(),
        source: Source::File(dir.join(POST_FILE)),
        list: None,
        jobs: l.jobs,
        clean: false,
    };
    (pre, data, post)
}

/// The data section of a restore whose rows are copied: a pg_dump of the rest first (it
/// holds the large objects, which --clean replaces there), then one worker per job.
fn copy_sections<'a>(
    dump: &impl Fn(Vec<String>) -> DumpCommand,
    rows: &Arc<Rows>,
    l: &Live<'_>,
) -> Vec<Section<'a>> {
    let mut args = vec!["--section=data".to_string()];
    args.extend(rows.excluded());
    let rest = Section {
        label: "data-rest".into(),
        source: Source::Dump(Box::new(dump(args))),
        list: None,
        jobs: 1,
        clean: l.opts.clean,
    };
    std::iter::once(rest)
        .chain((1..=l.jobs.max(1)).map(|k| Section {
            label: format!("rows-{k}"),
            source: Source::Rows(Arc::clone(rows)),
            list: None,
            jobs: 1,
            clean: false,
        }))
        .collect()
}

/// Dump the sections read from files into them, up to `--jobs` at once; the first failure
/// (or a signal) stops the rest. The target is not touched yet.
async fn stage<'s>(
    l: &Live<'_>,
    sections: impl Iterator<Item = &'s Section<'s>>,
    dump: &impl Fn(Vec<String>) -> DumpCommand,
    split: &DataSplit,
    dir: &Path,
) -> Result<()> {
    let files: Vec<(String, PathBuf, Vec<String>)> = sections
        .filter_map(|s| match &s.source {
            Source::File(p) => Some((s.label.clone(), p.clone(), section_args(&s.label, split))),
            _ => None,
        })
        .collect();
    let stop = l.ctx.cancel.child_token();
    let work = files.into_iter().map(|(label, path, args)| {
        let mut cmd = dump(args);
        let stop = stop.clone();
        async move {
            cmd.args.push(format!("--file={}", path.display()));
            let child = ChildProcess::spawn(
                &cmd.pg_dump,
                &cmd.args,
                Some(&cmd.conn),
                std::process::Stdio::null(),
                std::process::Stdio::null(),
            )?;
            match child.wait_or_stop(stop.cancelled()).await {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => {
                    stop.cancel();
                    Err(Error::from(e).context(format!(
                        "pg_dump of the {label} section from the sandbox into {}",
                        dir.display()
                    )))
                }
                None => Err(Error::new(
                    Kind::Interrupted,
                    "the restore was interrupted by a signal before the target was touched; nothing was changed",
                )),
            }
        }
    });
    let mut running = futures::stream::iter(work).buffer_unordered(width(l.jobs));
    let mut first: Option<Error> = None;
    while let Some(r) = running.next().await {
        if let Err(e) = r {
            // The cause, not a sibling stopped because of it.
            if first.as_ref().is_none_or(|f| f.kind == Kind::Interrupted) {
                first = Some(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The pg_dump arguments of a section by its label (`pre-data`, `data-K`, `post-data`).
fn section_args(label: &str, split: &DataSplit) -> Vec<String> {
    match label
        .strip_prefix("data-")
        .and_then(|k| k.parse::<u32>().ok())
    {
        Some(k) => {
            let mut args = vec!["--section=data".to_string()];
            args.extend(split.pg_dump_args(k));
            args
        }
        None => vec![format!("--section={label}")],
    }
}

/// `--with-globals`: the roles and tablespaces of the recovered cluster, refused (before the
/// target is touched) when it would create a role with powers `--allow-role` does not name.
async fn globals_of(l: &Live<'_>) -> Result<Vec<u8>> {
    let client = l.source.connect().await?;
    let superuser = dr_pg::source::is_superuser(&client).await.unwrap_or(false);
    drop(client);
    let sql = dump_globals(l.pg_dumpall, l.source, superuser, l.ctx).await;
    if l.ctx.cancel.is_cancelled() {
        return Err(Error::new(
            Kind::Interrupted,
            "the restore was interrupted by a signal before the target was touched; nothing was changed",
        ));
    }
    let sql = sql.map_err(|e| e.context("dumping the roles and tablespaces of the sandbox"))?;
    let roles = globals::powerful_roles(&l.target.conn, &sql).await?;
    globals::check_allowed(&roles, l.opts, &format!("the sandbox of {}", l.origin.what))?;
    Ok(sql)
}

/// The tables a selection can name, for the error that says it named none of them.
fn tables_hint(details: &BackupDetails) -> String {
    let names: Vec<String> = details.tables.iter().map(|t| t.qualified()).collect();
    let shown = names
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len() {
        0 => "the database held no tables at that point: choose a later --at".into(),
        n if n > 20 => format!(
            "tables at that point (SCHEMA.TABLE): {shown}, … and {} more",
            n - 20
        ),
        _ => format!("tables at that point (SCHEMA.TABLE): {shown}"),
    }
}

/// A spawned task that is aborted when dropped unjoined (a restore that failed before its
/// counts were needed).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Aborting<T> {
    async fn join(mut self) -> Result<T> {
        (&mut self.0)
            .await
            .map_err(|e| Error::new(Kind::Failed, format!("the counting task failed: {e}")))
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_section_is_dumped_with_its_own_arguments() {
        let t = |s: &str, n: &str, bytes| dr_pg::TableSize {
            schema: s.into(),
            name: n.into(),
            bytes,
            owned_sequences: vec![],
        };
        let split = dr_pg::split_data(&[t("public", "a", 100), t("public", "b", 50)], 2);
        assert_eq!(section_args("pre-data", &split), ["--section=pre-data"]);
        assert_eq!(section_args("post-data", &split), ["--section=post-data"]);
        let second = section_args("data-2", &split);
        assert_eq!(second[0], "--section=data");
        assert!(
            second.contains(&"--table=\"public\".\"b\"".to_string()),
            "{second:?}"
        );
        let first = section_args("data-1", &split);
        assert!(first.contains(&"-b".to_string()), "{first:?}");
    }

    #[test]
    fn a_selection_that_names_nothing_is_told_the_tables_there_were() {
        let mut details = BackupDetails::default();
        assert!(tables_hint(&details).contains("no tables"));
        details.tables = (0..25)
            .map(|i| dr_catalog::TableCount {
                schema: "public".into(),
                name: format!("t{i}"),
                rows: 0,
                stream: None,
            })
            .collect();
        let hint = tables_hint(&details);
        assert!(
            hint.contains("public.t0") && hint.contains("and 5 more"),
            "{hint}"
        );
    }
}
