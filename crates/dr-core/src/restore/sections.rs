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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dr_catalog::{BackupDetails, Manifest, ObjectRecord};
use dr_pg::{ChildProcess, ConnInfo};
use dr_stream::Identities;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::fetch::{decode_into, fetch_archive};
use super::globals::apply_globals;
use super::load::{
    count_and_compare, create_database, error_lines, find_pg_restore, pg_restore_output,
    restore_session_name, watch_lock_waits, Outcome,
};
use super::plan::selection;
use super::target::{check_space, TargetState};
use super::RestoreOptions;
use crate::{Context, Error, Kind, Result};

/// The section objects of a format-2 backup.
#[derive(Clone, Copy)]
pub(super) struct Sections<'a> {
    pub pre: &'a ObjectRecord,
    pub data: &'a [ObjectRecord],
    pub post: &'a ObjectRecord,
}

/// The file a section is written to by `--to-file DIR`, or staged as: restore order first.
pub(super) const PRE_FILE: &str = "1-pre-data.dump";
pub(super) const POST_FILE: &str = "3-post-data.dump";
pub(super) fn data_file(k: usize) -> String {
    format!("2-data-{k}.dump")
}

fn is_selective(opts: &RestoreOptions) -> bool {
    !opts.tables.is_empty() || !opts.schemas.is_empty()
}

/// The data streams (indexes into `Sections::data`) a restore reads: all of them, or for a
/// selective restore those holding a selected table (a table the backup assigned no stream
/// is in stream 1, the rest), and stream 1 for a schema (its sequences' values).
pub(super) fn selected_streams(
    details: &BackupDetails,
    opts: &RestoreOptions,
    streams: usize,
) -> Vec<usize> {
    if !is_selective(opts) {
        return (0..streams).collect();
    }
    let sel = selection(opts).unwrap_or_default();
    let mut set: BTreeSet<usize> = details
        .tables
        .iter()
        .filter(|t| sel.has_table(&t.schema, &t.name))
        .map(|t| usize::try_from(t.stream.unwrap_or(1)).unwrap_or(1).max(1) - 1)
        .collect();
    if !sel.schemas.is_empty() {
        set.insert(0);
    }
    set.into_iter().filter(|i| *i < streams).collect()
}

/// Free temp disk a restore into a database needs: the post-data archive, and what a
/// selective restore stages (the pre-data and the selected data streams).
pub(super) fn temp_needed(s: &Sections<'_>, details: &BackupDetails, opts: &RestoreOptions) -> u64 {
    let mut n = s.post.raw_bytes;
    if is_selective(opts) {
        n += s.pre.raw_bytes;
        n += selected_streams(details, opts, s.data.len())
            .into_iter()
            .map(|i| s.data[i].raw_bytes)
            .sum::<u64>();
    }
    n
}

/// `--to-file DIR` must name a new or empty directory: nothing there is overwritten.
pub(super) fn check_output_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::config(format!(
                    "--to-file {}: the directory is not empty; nothing was changed\nhint: a backup in sections is written as one file per section into a directory: name a new or empty one",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::config(format!(
            "--to-file {}: {e}; nothing was changed\nhint: a backup in sections is written into a directory: name a new or empty one",
            dir.display()
        ))),
    }
}

/// `--to-file DIR`: every section decrypted into `DIR` (mode 0600 files), and a README
/// saying the restore order with the exact commands. On failure what was written is removed.
pub(super) async fn write_dir(
    ctx: &Context,
    m: &Manifest,
    s: &Sections<'_>,
    identities: &Identities,
    dir: &Path,
    jobs: u32,
) -> Result<()> {
    let created = !dir.exists();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::new(Kind::Failed, format!("creating {}: {e}", dir.display())))?;
    }
    let mut files: Vec<(&ObjectRecord, PathBuf)> = vec![(s.pre, dir.join(PRE_FILE))];
    for (i, d) in s.data.iter().enumerate() {
        files.push((d, dir.join(data_file(i + 1))));
    }
    files.push((s.post, dir.join(POST_FILE)));
    let result = fetch_files(ctx, &files, identities, jobs, true)
        .await
        .and_then(|()| {
            super::fetch::write_file_atomically(&dir.join("README.txt"), readme(m, s).as_bytes())
        });
    if let Err(e) = result {
        for (_, p) in &files {
            let _ = std::fs::remove_file(p);
        }
        if created {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(e);
    }
    tracing::info!("backup {} written to {}", m.id, dir.display());
    Ok(())
}

fn readme(m: &Manifest, s: &Sections<'_>) -> String {
    let n = s.data.len();
    format!(
        "Backup {id} of `{target}` (PostgreSQL {version}), decrypted by dr {dr}.\n\
         \n\
         pg_restore archives (pg_dump -Fc), one per section. Restore them in this order,\n\
         into an empty database, from this directory (PGURL: the database's URL; add\n\
         --no-owner --no-acl when the backup's roles do not exist on the server):\n\
         \n\
         1. the schema (pre-data):\n\
         \x20  pg_restore --exit-on-error -d \"$PGURL\" {pre}\n\
         2. the data: {n} stream(s), one after the other or all at once:\n\
         \x20  for f in 2-data-*.dump; do pg_restore --exit-on-error -d \"$PGURL\" \"$f\"; done\n\
         3. indexes, constraints, triggers, policies (post-data):\n\
         \x20  pg_restore --exit-on-error -d \"$PGURL\" {post}\n\
         \x20  (not -j: alone, this archive cannot order foreign keys between the same\n\
         \x20  tables, and parallel workers can deadlock on them)\n\
         \n\
         These files hold the whole database unencrypted: delete them when done.\n",
        id = m.id,
        target = m.target,
        version = m.server_version,
        dr = env!("CARGO_PKG_VERSION"),
        pre = PRE_FILE,
        post = POST_FILE,
    )
}

/// Download, check and decrypt each object into its file, up to `jobs` at once.
async fn fetch_files(
    ctx: &Context,
    files: &[(&ObjectRecord, PathBuf)],
    identities: &Identities,
    jobs: u32,
    durable: bool,
) -> Result<()> {
    // Futures collected first: a closure in the stream would make the future not `Send`
    // for the daemon (rustc's higher-ranked lifetime limits).
    let futs: Vec<_> = files
        .iter()
        .map(|(rec, path)| fetch_archive(ctx, rec, identities, path, durable))
        .collect();
    let mut work = futures::stream::iter(futs).buffer_unordered(width(jobs));
    while let Some(r) = work.next().await {
        r?;
    }
    Ok(())
}

/// `--check-first`: download every object and check its digest and decryption, decoding
/// into nothing, up to `jobs` at once. The first failure stops the others.
async fn check_objects(
    ctx: &Context,
    objects: &[&ObjectRecord],
    identities: &Identities,
    jobs: u32,
) -> Result<()> {
    let stop = ctx.cancel.child_token();
    let futs: Vec<_> = objects
        .iter()
        .map(|rec| decode_into(ctx, rec, identities, std::io::sink(), stop.clone(), |_| {}))
        .collect();
    let mut work = futures::stream::iter(futs).buffer_unordered(width(jobs));
    while let Some(r) = work.next().await {
        if let Err(e) = r {
            stop.cancel();
            if ctx.cancel.is_cancelled() {
                return Err(Error::interrupted("the check before the restore"));
            }
            let mut e = e.context("checking the backup before touching the target");
            e.details
                .push("the target was not touched: nothing was changed".to_string());
            return Err(e);
        }
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::interrupted("the check before the restore"));
    }
    Ok(())
}

/// How many of a step's streams run at once.
fn width(jobs: u32) -> usize {
    usize::try_from(jobs).unwrap_or(1).max(1)
}

/// Everything a sectioned restore needs.
pub(super) struct Load<'a> {
    pub ctx: &'a Context,
    pub m: &'a Manifest,
    pub details: &'a BackupDetails,
    pub identities: &'a Identities,
    pub target: &'a TargetState,
    pub opts: &'a RestoreOptions,
    pub jobs: u32,
    pub globals: Option<&'a [u8]>,
    pub temp_dir: &'a Path,
    /// The sections already decrypted into this directory (`--to-file DIR` with `--to`):
    /// read from there, not from the store.
    pub files_in: Option<&'a Path>,
    pub check_first: bool,
}

/// Where a section's pg_restore reads: the store through a pipe, or a file.
enum Source<'a> {
    Pipe(&'a ObjectRecord),
    File(PathBuf),
}

struct Section<'a> {
    label: String,
    source: Source<'a>,
    /// `pg_restore --use-list` content (a selective restore).
    list: Option<String>,
    jobs: u32,
    clean: bool,
}

/// The first failure of any stream, and the token that stops them all.
#[derive(Clone)]
struct Stopper {
    token: CancellationToken,
    first: Arc<Mutex<Option<Error>>>,
}

impl Stopper {
    fn new(parent: &CancellationToken) -> Stopper {
        Stopper {
            token: parent.child_token(),
            first: Arc::new(Mutex::new(None)),
        }
    }

    /// Record `e` (unless a failure was recorded before it) and stop every stream.
    fn fail(&self, e: Error) {
        if let Ok(mut f) = self.first.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        self.token.cancel();
    }

    /// Why the streams were stopped, if they were.
    fn failure(&self, ctx: &Context, conn: &ConnInfo) -> Option<Error> {
        if !self.token.is_cancelled() {
            return None;
        }
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        // A signal (SIGTERM to the whole cgroup reaches pg_restore too, which may then exit
        // before dr stops it) is an interruption, whatever a child reported on the way.
        if ctx.cancel.is_cancelled() {
            let mut e = Error::new(
                Kind::Interrupted,
                format!("the restore into {conn} was interrupted by a signal; every pg_restore and its workers were stopped"),
            );
            if let Some(f) = first.filter(|f| f.kind != Kind::Interrupted) {
                e.details.push(format!("meanwhile: {}", f.summary()));
            }
            return Some(e);
        }
        Some(first.unwrap_or_else(|| {
            Error::new(Kind::Failed, format!("the restore into {conn} was stopped"))
        }))
    }
}

/// Restore a format-2 backup into `l.target`: staging and checks first, then the three
/// steps; on failure the target is left as the returned error says.
pub(super) async fn restore_sections(
    l: &Load<'_>,
    s: Sections<'_>,
    seconds: &mut BTreeMap<String, f64>,
) -> Result<Outcome> {
    let ctx = l.ctx;
    let opts = l.opts;
    let selective = is_selective(opts);
    let streams = selected_streams(l.details, opts, s.data.len());
    let pg_restore = find_pg_restore(ctx, l.m, l.target)?;

    // Before the target is touched: check (--check-first) and stage what is read from files.
    let fetch_clock = Instant::now();
    let staging;
    let dir: PathBuf = match l.files_in {
        Some(d) => d.to_path_buf(),
        None => {
            check_space(l.temp_dir, temp_needed(&s, l.details, opts))?;
            staging = tempfile::Builder::new()
                .prefix("dr-restore-")
                .tempdir_in(l.temp_dir)
                .map_err(|e| {
                    Error::new(
                        Kind::Failed,
                        format!(
                            "cannot create a temp dir in {}: {e}\nhint: pass --temp-dir DIR",
                            l.temp_dir.display()
                        ),
                    )
                })?;
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
                    "checking every object of backup {} before touching the target",
                    l.m.id
                );
                check_objects(ctx, &piped, l.identities, l.jobs).await?;
            }
            let mut files: Vec<(&ObjectRecord, PathBuf)> = vec![(s.post, dir.join(POST_FILE))];
            if selective {
                files.push((s.pre, dir.join(PRE_FILE)));
                for &i in &streams {
                    files.push((&s.data[i], dir.join(data_file(i + 1))));
                }
            }
            fetch_files(ctx, &files, l.identities, l.jobs, false)
                .await
                .map_err(|e| {
                    let mut e = e;
                    e.details
                        .push("the target was not touched: nothing was changed".to_string());
                    e
                })?;
            dir
        }
    };
    let from_files = l.files_in.is_some() || selective;
    let mut pre = Section {
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
    let mut data: Vec<Section<'_>> = streams
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
            clean: false,
        })
        .collect();
    let mut post = Section {
        label: "post-data".into(),
        source: Source::File(dir.join(POST_FILE)),
        list: None,
        jobs: l.jobs,
        clean: false,
    };
    let mut skipped_foreign_keys = Vec::new();
    if selective {
        skipped_foreign_keys =
            select_lists(&pg_restore.path, opts, &mut pre, &mut data, &mut post).await?;
    }
    // pg_restore -j orders the statements of one archive by the tables they lock, but a
    // post-data archive alone names no tables: two foreign keys between the same tables
    // (circular ones) would deadlock. Foreign keys go last, one at a time.
    let post_list = match post.list.take() {
        Some(l) => l,
        None => {
            pg_restore_output(
                &pg_restore.path,
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
    seconds.insert("fetch_decrypt".into(), fetch_clock.elapsed().as_secs_f64());

    // The target.
    let restore_clock = Instant::now();
    let conn = &l.target.conn;
    let mut errors = Vec::new();
    if let Some(sql) = l.globals {
        errors.extend(apply_globals(conn, sql, l.opts, &l.m.id.to_string()).await?);
    }
    let created = !l.target.exists;
    if created {
        create_database(conn).await?;
    }
    let session_name = restore_session_name();
    let stopper = Stopper::new(&ctx.cancel);
    let loaded = load(l, &pg_restore.path, &dir, &session_name, &stopper, steps).await;
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
    let (tables, mismatches) = count_and_compare(conn, l.details, opts, l.jobs).await?;
    Ok(Outcome {
        errors,
        tables,
        mismatches,
        skipped_foreign_keys,
    })
}

/// The `pg_restore -L` lists of a selective restore, from the staged files: the whole
/// pre-data, the selected tables' data and post-data ([`dr_pg::select_entries`] on each
/// section's list, with the pre-data and post-data scripts together as the schema script).
/// Returns the foreign keys left out.
async fn select_lists(
    pg_restore: &Path,
    opts: &RestoreOptions,
    pre: &mut Section<'_>,
    data: &mut Vec<Section<'_>>,
    post: &mut Section<'_>,
) -> Result<Vec<String>> {
    let path_of = |s: &Section<'_>| match &s.source {
        Source::File(p) => p.display().to_string(),
        Source::Pipe(r) => r.key.clone(),
    };
    let script = |p: String| {
        pg_restore_output(
            pg_restore,
            vec!["--schema-only".into(), "--file=-".into(), p],
        )
    };
    let mut schema = script(path_of(pre)).await?;
    schema.push_str(&script(path_of(post)).await?);
    let sel = selection(opts)?;
    let mut any = false;
    for d in data.iter_mut() {
        let list = pg_restore_output(pg_restore, vec!["--list".into(), path_of(d)]).await?;
        let chosen = dr_pg::select_entries(&list, &schema, &sel).list;
        any |= !chosen.is_empty();
        d.list = Some(chosen);
    }
    data.retain(|d| d.list.as_ref().is_some_and(|l| !l.is_empty()));
    let list = pg_restore_output(pg_restore, vec!["--list".into(), path_of(post)]).await?;
    let chosen = dr_pg::select_entries(&list, &schema, &sel);
    any |= !chosen.list.is_empty();
    if !any {
        return Err(Error::config(format!(
            "nothing in the backup matches {}\nhint: `dr show latest` lists the tables (names are SCHEMA.TABLE)",
            opts.tables.iter().chain(opts.schemas.iter()).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    for fk in &chosen.skipped_foreign_keys {
        tracing::warn!("foreign key {fk} skipped: the table it references is not restored");
    }
    post.list = Some(chosen.list);
    pre.list = None;
    Ok(chosen.skipped_foreign_keys)
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
            stopper.fail(Error::new(
                Kind::Failed,
                format!("the restore into {conn} was stopped: {why}\nhint: stop the application's connections to the target (or restore into a new database name), then restore again"),
            ));
        })
    };
    if l.opts.clean {
        if let Err(e) = drop_foreign_keys_to_replaced(conn, l.details).await {
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
    for step in &steps {
        let futs: Vec<_> = step.iter().map(|s| run.section(s)).collect();
        let mut work = futures::stream::iter(futs).buffer_unordered(width(l.jobs));
        while let Some(errs) = work.next().await {
            errors.extend(errs);
        }
        if stopper.token.is_cancelled() {
            break;
        }
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

struct Run<'r> {
    l: &'r Load<'r>,
    pg_restore: &'r Path,
    dir: &'r Path,
    base: &'r [String],
    child_conn: &'r ConnInfo,
    stop: &'r Stopper,
}

impl Run<'_> {
    /// One section's pg_restore: its errors, each prefixed by the section; a failure stops
    /// every stream (recorded in the stopper) and returns none.
    async fn section(&self, s: &Section<'_>) -> Vec<String> {
        if self.stop.token.is_cancelled() {
            return Vec::new();
        }
        match self.section_inner(s).await {
            Ok(errors) => errors
                .into_iter()
                .map(|e| format!("{}: {e}", s.label))
                .collect(),
            Err(e) => {
                self.stop.fail(e);
                Vec::new()
            }
        }
    }

    async fn section_inner(&self, s: &Section<'_>) -> Result<Vec<String>> {
        let mut args = self.base.to_vec();
        if s.clean {
            args.push("--clean".into());
            args.push("--if-exists".into());
        }
        if s.jobs > 1 {
            args.push(format!("--jobs={}", s.jobs));
        }
        let _list_file;
        if let Some(list) = &s.list {
            let mut f = tempfile::Builder::new()
                .prefix("list-")
                .tempfile_in(self.dir)
                .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
            f.write_all(list.as_bytes())
                .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
            args.push(format!("--use-list={}", f.path().display()));
            _list_file = f;
        }
        tracing::info!(section = %s.label, "pg_restore started");
        match &s.source {
            Source::File(p) => {
                args.push(p.display().to_string());
                let child = ChildProcess::spawn(
                    self.pg_restore,
                    &args,
                    Some(self.child_conn),
                    std::process::Stdio::null(),
                    std::process::Stdio::null(),
                )?;
                self.finish(child, &s.label).await
            }
            Source::Pipe(rec) => {
                let mut child = ChildProcess::spawn(
                    self.pg_restore,
                    &args,
                    Some(self.child_conn),
                    std::process::Stdio::piped(),
                    std::process::Stdio::null(),
                )?;
                let stdin = child.stdin().ok_or_else(|| {
                    Error::new(Kind::Failed, "pg_restore was started without a stdin pipe")
                })?;
                let pipe = std::fs::File::from(stdin.into_owned_fd().map_err(|e| {
                    Error::new(Kind::Failed, format!("pg_restore's stdin pipe: {e}"))
                })?);
                let stopper = self.stop.clone();
                let feed = decode_into(
                    self.l.ctx,
                    rec,
                    self.l.identities,
                    pipe,
                    self.stop.token.clone(),
                    move |e| stopper.fail(e.clone()),
                );
                // A pg_restore that failed stops every stream now: its object need not be
                // read to the end (that is only for one that exited 0, to check the digest).
                let finish = async {
                    let r = self.finish(child, &s.label).await;
                    if let Err(e) = &r {
                        self.stop.fail(e.clone());
                    }
                    r
                };
                let (fed, done) = tokio::join!(feed, finish);
                if let Err(e) = fed {
                    // Already recorded, unless the thread itself failed.
                    if !self.stop.token.is_cancelled() {
                        self.stop.fail(e);
                    }
                }
                done
            }
        }
    }

    /// Wait for a section's pg_restore, or stop it (as a group) when any stream fails.
    /// pg_restore goes on after SQL errors and reports them at the end ("errors ignored on
    /// restore"): those are collected. Any other exit is a failure of the stream.
    async fn finish(&self, child: ChildProcess, label: &str) -> Result<Vec<String>> {
        match child.wait_or_stop(self.stop.token.cancelled()).await {
            None => Ok(Vec::new()),
            Some(Ok(f)) => {
                tracing::info!(section = %label, "pg_restore finished");
                Ok(f.errors)
            }
            Some(Err(dr_pg::PgError::Failed(pf)))
                if pf.stderr.contains("errors ignored on restore") =>
            {
                Ok(error_lines(&pf))
            }
            Some(Err(dr_pg::PgError::Failed(pf))) => Err(Error::new(
                Kind::Failed,
                format!(
                    "pg_restore of the {label} section failed ({})\n{}",
                    pf.status,
                    error_lines(&pf).join("\n")
                ),
            )),
            Some(Err(e)) => {
                Err(Error::from(e).context(format!("pg_restore of the {label} section")))
            }
        }
    }
}

/// `--clean` restores the pre-data section alone, whose table of contents has no foreign
/// keys (post-data) to order the DROPs by: a table another table references cannot be
/// dropped. So first drop every foreign key that references a table the backup replaces
/// (or its partitioned parents); the post-data step recreates the backup's own.
async fn drop_foreign_keys_to_replaced(conn: &ConnInfo, details: &BackupDetails) -> Result<()> {
    let client = conn.connect().await?;
    let schemas: Vec<String> = details.tables.iter().map(|t| t.schema.clone()).collect();
    let names: Vec<String> = details.tables.iter().map(|t| t.name.clone()).collect();
    let rows = client
        .query(
            "with replaced as (
                 select c.oid from pg_class c
                 join pg_namespace n on n.oid = c.relnamespace
                 join unnest($1::text[], $2::text[]) as u(s, r) on u.s = n.nspname and u.r = c.relname
             ), targets as (
                 select oid from replaced
                 union
                 select a.relid from replaced, lateral pg_partition_ancestors(replaced.oid) a
             )
             select format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', con.conrelid::regclass, con.conname),
                    con.conname::text, con.conrelid::regclass::text, con.confrelid::regclass::text
             from pg_constraint con
             where con.contype = 'f' and con.conparentid = 0
               and con.confrelid in (select oid from targets)
             order by 1",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("listing the foreign keys to the tables --clean replaces in {conn}: {e}"),
            )
        })?;
    for r in rows {
        let (sql, name, on, to): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        tracing::warn!(
            "--clean: dropping foreign key {name} on {on} (it references {to}, which the backup replaces); the backup's own foreign keys are recreated after the data"
        );
        client.batch_execute(&sql).await.map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("--clean: dropping foreign key {name} on {on} in {conn}: {e}"),
            )
        })?;
    }
    Ok(())
}

/// After a stopped restore: end its sessions, then drop the database it created, or say
/// the existing one is partially restored and how to retry.
async fn leave_target(l: &Load<'_>, created: bool, session_name: &str, mut e: Error) -> Error {
    let conn = &l.target.conn;
    match dr_pg::end_sessions(conn, session_name, Duration::from_secs(10)).await {
        Ok(0) => {}
        Ok(n) => tracing::error!(
            "{n} session(s) of the stopped restore are still on the server (application_name `{session_name}`)"
        ),
        Err(err) => tracing::error!("could not end the stopped restore's sessions: {err}"),
    }
    let db = conn.dbname();
    if created {
        match drop_database(conn, l.target.major).await {
            Ok(()) => e.details.push(if l.opts.with_globals {
                format!("the database {db} that this restore created was dropped; roles that --with-globals created stay")
            } else {
                format!("the database {db} that this restore created was dropped: the server is as it was before")
            }),
            Err(err) => {
                e.details.push(format!(
                    "the database {db} that this restore created could not be dropped: {err}"
                ));
                add_hint(
                    &mut e,
                    format!(
                        "drop the half-restored database: psql -d postgres -c 'DROP DATABASE {}'",
                        dr_pg::quote_ident(db)
                    ),
                );
            }
        }
        return e;
    }
    e.details.push(format!(
        "the database {db} is PARTIALLY restored: the restore stopped part-way through"
    ));
    add_hint(&mut e, format!("to restore it again: {}", retry_command(l)));
    e
}

fn add_hint(e: &mut Error, more: String) {
    e.hint = Some(match e.hint.take() {
        Some(h) => format!("{h}; {more}"),
        None => more,
    });
}

/// The `dr restore` that restores the same backup over the partial one: exactly what the
/// operator asked (selection, `--force`), never a wider `--clean` than they chose, and
/// without `--yes`, so the plan is shown and confirmed again.
fn retry_command(l: &Load<'_>) -> String {
    let o = l.opts;
    let selective = !o.tables.is_empty() || !o.schemas.is_empty();
    let mut cmd = format!(
        "dr restore {} --target {} --to '{}'",
        l.m.id, l.m.target, l.target.conn
    );
    for t in &o.tables {
        cmd.push_str(&format!(" --table '{t}'"));
    }
    for sc in &o.schemas {
        cmd.push_str(&format!(" --schema '{sc}'"));
    }
    // A whole backup over its partial self: --clean replaces the backup's own objects (and
    // nothing else). A selection cannot be cleaned (refused): it is repeated as it was.
    if selective {
        cmd.push_str(" --force");
    } else {
        cmd.push_str(" --clean");
    }
    if o.with_globals {
        cmd.push_str(" --with-globals");
    }
    if o.no_owner {
        cmd.push_str(" --no-owner");
    }
    cmd.push_str(&format!(" --jobs {}", l.jobs));
    if selective {
        cmd.push_str(" (a selective restore over a partial one may leave rows twice: restoring the selection into a new database and copying from there is safer)");
    }
    cmd.push_str(" (or, for an older backup, its id from `dr list` in place of ");
    cmd.push_str(&l.m.id.to_string());
    cmd.push(')');
    cmd
}

async fn drop_database(conn: &ConnInfo, major: u32) -> Result<()> {
    let admin = conn.connect_admin().await?;
    let force = if major >= 13 { " with (force)" } else { "" };
    let sql = format!(
        "drop database if exists {}{force}",
        dr_pg::quote_ident(conn.dbname())
    );
    admin
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("{sql}: {e}")))?;
    tracing::warn!(
        "dropped database {} (created by the stopped restore)",
        conn.dbname()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_catalog::TableCount;

    fn details() -> BackupDetails {
        let t = |s: &str, n: &str, stream| TableCount {
            schema: s.into(),
            name: n.into(),
            rows: 1,
            stream,
        };
        BackupDetails {
            tables: vec![
                t("public", "a", Some(1)),
                t("public", "b", Some(2)),
                t("audit", "c", Some(3)),
                t("public", "d", None),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_selective_restore_reads_only_the_streams_of_its_tables() {
        let all = RestoreOptions::default();
        assert_eq!(selected_streams(&details(), &all, 3), [0, 1, 2]);
        let one = RestoreOptions {
            tables: vec!["public.b".into()],
            ..Default::default()
        };
        assert_eq!(selected_streams(&details(), &one, 3), [1]);
        let rest = RestoreOptions {
            tables: vec!["public.d".into()],
            ..Default::default()
        };
        assert_eq!(selected_streams(&details(), &rest, 3), [0]);
        let schema = RestoreOptions {
            schemas: vec!["audit".into()],
            ..Default::default()
        };
        assert_eq!(selected_streams(&details(), &schema, 3), [0, 2]);
    }
}
