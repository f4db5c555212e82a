//! `dr restore`: fetch, check, decrypt — and only then touch the target.
//!
//! Order of work, each step a gate for the next:
//! 1. pick the backup (id, `latest`, `--at`); decrypt its details (proves the identity fits);
//! 2. inspect the target: server major, does the database exist, does it hold user objects —
//!    refuse a non-empty target unless `--clean`/`--force`;
//! 3. check temp space; download, verify SHA-256, decrypt and decompress into a local archive
//!    (pg_restore -j needs a seekable file);
//! 4. create the database if missing, create missing roles (`--with-globals`), `pg_restore -j`;
//! 5. compare restored row counts with the backup's; any pg_restore error is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use dr_catalog::{BackupDetails, Manifest, ObjectRecord, ObjectRole};
use dr_pg::{ChildProcess, ConnInfo, ServerVersion};
use dr_stream::Identities;
use serde::Serialize;
use tokio_util::io::SyncIoBridge;

use crate::repo::{self, Selector};
use crate::{human_bytes, Context, Error, Kind, Result};

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub selector: Option<Selector>,
    pub target: Option<String>,
    pub to: Option<String>,
    pub to_file: Option<PathBuf>,
    pub globals_to_file: Option<PathBuf>,
    pub jobs: Option<u32>,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub clean: bool,
    pub force: bool,
    pub with_globals: bool,
    pub no_owner: bool,
    pub dry_run: bool,
    pub temp_dir: Option<PathBuf>,
}

/// What is going to happen, shown before it happens.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub backup_id: String,
    pub target: String,
    pub backup_started_at: String,
    pub stored_bytes: u64,
    pub archive_bytes: u64,
    pub server_version: String,
    pub destination: String,
    pub destination_state: String,
    pub tables: usize,
    pub rows: i64,
    pub jobs: u32,
    pub temp_dir: String,
    pub temp_bytes_needed: u64,
    pub selection: Vec<String>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "restore plan")?;
        writeln!(
            f,
            "  backup       {} of `{}` (taken {})",
            self.backup_id, self.target, self.backup_started_at
        )?;
        writeln!(
            f,
            "  size         {} stored, {} archive",
            human_bytes(self.stored_bytes),
            human_bytes(self.archive_bytes)
        )?;
        writeln!(f, "  from server  PostgreSQL {}", self.server_version)?;
        writeln!(
            f,
            "  into         {} ({})",
            self.destination, self.destination_state
        )?;
        writeln!(
            f,
            "  expected     {} tables, {} rows",
            self.tables, self.rows
        )?;
        if !self.selection.is_empty() {
            writeln!(f, "  only         {}", self.selection.join(", "))?;
        }
        writeln!(f, "  jobs         {}", self.jobs)?;
        write!(
            f,
            "  temp disk    {} in {}",
            human_bytes(self.temp_bytes_needed),
            self.temp_dir
        )
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub plan: Plan,
    pub restored: bool,
    /// table → (expected, actual)
    pub tables: BTreeMap<String, (i64, i64)>,
    pub mismatches: Vec<String>,
    pub errors: Vec<String>,
    pub seconds: BTreeMap<String, f64>,
}

/// Ask the operator; `None` means no prompt (not a terminal, or --yes).
pub type Confirm<'a> = Option<&'a (dyn Fn(&Plan) -> bool + Sync)>;

struct TargetState {
    conn: ConnInfo,
    exists: bool,
    user_objects: i64,
    major: u32,
}

pub async fn run(
    ctx: &Context,
    opts: &RestoreOptions,
    confirm: Confirm<'_>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let mut seconds = BTreeMap::new();
    let selector = opts.selector.clone().unwrap_or(Selector::Latest);
    let entry = repo::resolve(ctx.store.as_ref(), opts.target.as_deref(), &selector).await?;
    let m = entry.manifest;
    let identities = ctx.identities()?;
    let details = fetch_details(ctx, &m, &identities).await?;
    let dump = m
        .object(ObjectRole::Dump)
        .ok_or_else(|| {
            Error::new(
                Kind::Integrity,
                format!("backup {} has no dump object", m.id),
            )
        })?
        .clone();

    // Everything the operator asked for is checked before the first side effect.
    check_selection(&details, opts, &m)?;
    if opts.jobs == Some(0) {
        return Err(Error::config("--jobs must be at least 1"));
    }
    let jobs = opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(2))
            .unwrap_or(2)
    });
    let temp_dir = opts
        .temp_dir
        .clone()
        .or_else(|| ctx.config.restore.temp_dir.clone())
        .unwrap_or_else(std::env::temp_dir);

    // Inspect the target before spending time on the download.
    let target = match &opts.to {
        Some(url) => Some(inspect_target(url).await?),
        None => None,
    };
    let (expected_tables, expected_rows) = selected_counts(&details, opts);
    let plan = Plan {
        backup_id: m.id.to_string(),
        target: m.target.clone(),
        backup_started_at: m.started_at.to_rfc3339(),
        stored_bytes: m.stored_bytes(),
        archive_bytes: dump.raw_bytes,
        server_version: m.server_version.clone(),
        destination: match (&target, &opts.to_file) {
            (Some(t), _) => t.conn.to_string(),
            (None, Some(p)) => format!("file {}", p.display()),
            (None, None) => "nowhere".into(),
        },
        destination_state: match &target {
            Some(t) if !t.exists => "database does not exist: it will be created".into(),
            Some(t) if t.user_objects == 0 => "empty database".into(),
            Some(t) => format!("holds {} user objects", t.user_objects),
            None => "new file".into(),
        },
        tables: expected_tables.len(),
        rows: expected_rows,
        jobs,
        temp_dir: temp_dir.display().to_string(),
        temp_bytes_needed: if opts.to_file.is_some() && target.is_none() {
            0
        } else {
            dump.raw_bytes
        },
        selection: opts
            .schemas
            .iter()
            .map(|s| format!("schema {s}"))
            .chain(opts.tables.iter().map(|t| format!("table {t}")))
            .collect(),
    };
    if let Some(t) = &target {
        if t.major < m.server_major {
            return Err(Error::new(
                Kind::Refused,
                format!(
                    "the target server is PostgreSQL {} but the backup comes from PostgreSQL {}\nhint: restore into a server of major {} or newer",
                    t.major, m.server_major, m.server_major
                ),
            ));
        }
        if t.exists && t.user_objects > 0 && !opts.clean && !opts.force && !opts.dry_run {
            return Err(Error::new(
                Kind::Refused,
                format!(
                    "refusing to restore into {}: it already holds {} user objects\nhint: restore into a new database name (it is created for you), or pass --clean to drop and recreate the objects the backup contains, or --force to restore on top",
                    t.conn, t.user_objects
                ),
            ));
        }
    }
    // Ownership the target cannot satisfy: say so before anything is touched.
    if let Some(t) = &target {
        if !opts.with_globals && !opts.no_owner && !details.owners.is_empty() {
            let admin = t.conn.connect_admin().await?;
            let have: BTreeSet<String> = admin
                .query("select rolname::text from pg_roles", &[])
                .await
                .map_err(|e| Error::new(Kind::Failed, format!("listing roles on {}: {e}", t.conn)))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let missing: Vec<&str> = details
                .owners
                .iter()
                .filter(|o| !have.contains(o.as_str()))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(Error::new(
                    Kind::Refused,
                    format!(
                        "the backup's objects are owned by roles the target server lacks: {}\nhint: pass --with-globals to create the missing roles from the backup (existing roles are never altered), or --no-owner to make the restoring user own everything",
                        missing.join(", ")
                    ),
                ));
            }
        }
    }
    if opts.dry_run {
        return Ok(RestoreReport {
            plan,
            restored: false,
            tables: BTreeMap::new(),
            mismatches: Vec::new(),
            errors: Vec::new(),
            seconds,
        });
    }
    if let Some(ask) = confirm {
        if !ask(&plan) {
            return Err(Error::new(
                Kind::Refused,
                "restore cancelled at the prompt; nothing was changed",
            ));
        }
    }

    // Globals to a file, or to memory for --with-globals.
    let globals_sql = if opts.with_globals || opts.globals_to_file.is_some() {
        let rec = m.object(ObjectRole::Globals).ok_or_else(|| {
            Error::new(
                Kind::Integrity,
                format!("backup {} has no globals object", m.id),
            )
        })?;
        let bytes = ctx.store.get(&rec.key).await?;
        check_digest(rec, &bytes)?;
        let sql = dr_stream::unseal(&bytes, &identities, &rec.key)?;
        if let Some(p) = &opts.globals_to_file {
            write_file_atomically(p, &sql)?;
            tracing::info!("roles and tablespaces written to {}", p.display());
        }
        Some(sql)
    } else {
        None
    };

    let fetch_clock = Instant::now();
    // --to-file without --to: decode straight into the destination.
    let archive: ArchiveFile = match (&opts.to_file, &target) {
        (Some(path), None) => {
            let partial = path.with_extension("partial");
            fetch_archive(ctx, &dump, &identities, &partial, true).await?;
            std::fs::rename(&partial, path).map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!("moving the archive to {}: {e}", path.display()),
                )
            })?;
            ArchiveFile::Kept(path.clone())
        }
        _ => {
            check_space(&temp_dir, dump.raw_bytes)?;
            let tmp = tempfile::Builder::new()
                .prefix("dr-restore-")
                .suffix(".dump")
                .tempfile_in(&temp_dir)
                .map_err(|e| {
                    Error::new(
                        Kind::Failed,
                        format!(
                            "cannot create a temp file in {}: {e}\nhint: pass --temp-dir DIR",
                            temp_dir.display()
                        ),
                    )
                })?;
            let path = tmp.path().to_path_buf();
            fetch_archive(ctx, &dump, &identities, &path, false).await?;
            ArchiveFile::Temp(tmp)
        }
    };
    seconds.insert("fetch_decrypt".into(), fetch_clock.elapsed().as_secs_f64());
    if let (Some(path), Some(_)) = (&opts.to_file, &target) {
        private_file(path)
            .and_then(|mut f| std::io::copy(&mut std::fs::File::open(archive.path())?, &mut f))
            .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", path.display())))?;
    }
    let Some(target) = target else {
        seconds.insert("total".into(), started.elapsed().as_secs_f64());
        return Ok(RestoreReport {
            plan,
            restored: false,
            tables: BTreeMap::new(),
            mismatches: Vec::new(),
            errors: Vec::new(),
            seconds,
        });
    };

    let restore_clock = Instant::now();
    let outcome = restore_into(
        ctx,
        &m,
        &details,
        &target,
        archive.path(),
        globals_sql.as_deref(),
        jobs,
        opts,
    )
    .await;
    seconds.insert("restore".into(), restore_clock.elapsed().as_secs_f64());
    drop(archive);
    let (errors, tables, mismatches) = outcome?;
    seconds.insert("total".into(), started.elapsed().as_secs_f64());
    let report = RestoreReport {
        plan,
        restored: true,
        tables,
        mismatches,
        errors,
        seconds,
    };
    if !report.errors.is_empty() || !report.mismatches.is_empty() {
        let mut msg = format!(
            "restore of backup {} into {} finished with errors:",
            m.id, target.conn
        );
        for e in report.errors.iter().take(50) {
            msg.push_str(&format!("\n  {e}"));
        }
        if report.errors.len() > 50 {
            msg.push_str(&format!("\n  ... and {} more", report.errors.len() - 50));
        }
        for mm in &report.mismatches {
            msg.push_str(&format!("\n  {mm}"));
        }
        msg.push_str("\nhint: the database is partially restored; fix the cause (often a missing role: --with-globals or --no-owner; or a missing extension) and restore again with --clean");
        return Err(Error::new(Kind::Failed, msg));
    }
    Ok(report)
}

enum ArchiveFile {
    Temp(tempfile::NamedTempFile),
    Kept(PathBuf),
}

impl ArchiveFile {
    fn path(&self) -> &Path {
        match self {
            ArchiveFile::Temp(t) => t.path(),
            ArchiveFile::Kept(p) => p,
        }
    }
}

fn check_digest(rec: &ObjectRecord, bytes: &[u8]) -> Result<()> {
    let actual = dr_stream::sha256_hex(bytes);
    if actual != rec.sha256 {
        return Err(Error::from(dr_stream::StreamError::DigestMismatch {
            object: rec.key.clone(),
            expected: rec.sha256.clone(),
            actual,
        }));
    }
    Ok(())
}

/// The encrypted table list and counts.
pub async fn fetch_details(
    ctx: &Context,
    m: &Manifest,
    identities: &Identities,
) -> Result<BackupDetails> {
    let rec = m.object(ObjectRole::Details).ok_or_else(|| {
        Error::new(
            Kind::Integrity,
            format!("backup {} has no details object", m.id),
        )
    })?;
    let bytes = ctx
        .store
        .get(&rec.key)
        .await
        .map_err(|e| Error::from(e).context(format!("backup {}", m.id)))?;
    check_digest(rec, &bytes)?;
    let plain = dr_stream::unseal(&bytes, identities, &rec.key)?;
    serde_json::from_slice(&plain)
        .map_err(|e| Error::new(Kind::Integrity, format!("`{}` is not valid: {e}", rec.key)))
}

/// Every `--table` names a table of the backup and every `--schema` a schema holding one:
/// a typo must fail before a database is created or anything is fetched.
fn check_selection(details: &BackupDetails, opts: &RestoreOptions, m: &Manifest) -> Result<()> {
    let mut unknown = Vec::new();
    for t in &opts.tables {
        let (s, n) = split_table(t);
        if !details.tables.iter().any(|x| x.schema == s && x.name == n) {
            unknown.push(format!("table {t}"));
        }
    }
    for schema in &opts.schemas {
        let known = details.tables.iter().any(|x| &x.schema == schema)
            || details.sequences.iter().any(|x| &x.schema == schema);
        if !known {
            unknown.push(format!("schema {schema}"));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "backup {} of `{}` holds no {}; nothing was changed\nhint: `dr show {} --target {}` lists its tables as SCHEMA.TABLE",
        m.id,
        m.target,
        unknown.join(", "),
        m.id,
        m.target
    )))
}

fn selected_counts(details: &BackupDetails, opts: &RestoreOptions) -> (BTreeMap<String, i64>, i64) {
    let sel: BTreeMap<String, i64> = details
        .tables
        .iter()
        .filter(|t| table_selected(&t.schema, &t.name, opts))
        .map(|t| (t.qualified(), t.rows))
        .collect();
    let rows = sel.values().sum();
    (sel, rows)
}

fn table_selected(schema: &str, name: &str, opts: &RestoreOptions) -> bool {
    if opts.tables.is_empty() && opts.schemas.is_empty() {
        return true;
    }
    opts.schemas.iter().any(|s| s == schema)
        || opts.tables.iter().any(|t| {
            let (s, n) = split_table(t);
            s == schema && n == name
        })
}

/// `schema.table` or `table` (public).
fn split_table(t: &str) -> (&str, &str) {
    match t.split_once('.') {
        Some((s, n)) => (s, n),
        None => ("public", t),
    }
}

async fn inspect_target(url: &str) -> Result<TargetState> {
    let conn = ConnInfo::parse(url)?;
    let admin = conn.connect_admin().await?;
    let version = ServerVersion::query(&admin).await?;
    let exists = admin
        .query_opt(
            "select 1 from pg_database where datname = $1",
            &[&conn.dbname()],
        )
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("inspecting {conn}: {e}")))?
        .is_some();
    let mut user_objects = 0;
    if exists {
        let client = conn.connect().await?;
        user_objects = client
            .query_one(
                "select (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                          where n.nspname not in ('pg_catalog','information_schema')
                            and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%')
                      + (select count(*) from pg_namespace where nspname not in ('pg_catalog','information_schema','public')
                            and nspname not like 'pg\\_%')
                      + (select count(*) from pg_extension where extname <> 'plpgsql')
                      + (select count(*) from pg_largeobject_metadata)",
                &[],
            )
            .await
            .map_err(|e| Error::new(Kind::Failed, format!("inspecting {conn}: {e}")))?
            .get(0);
    }
    Ok(TargetState {
        conn,
        exists,
        user_objects,
        major: version.major,
    })
}

fn check_space(dir: &Path, needed: u64) -> Result<()> {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let avail = s.blocks_available().saturating_mul(s.fragment_size());
            // 5% margin: the archive size is exact, the file system's bookkeeping is not.
            if avail < needed + needed / 20 {
                // Not "unavailable": retrying will not make room.
                return Err(Error::new(
                    Kind::Failed,
                    format!(
                        "not enough space in {}: the decrypted archive needs {}, {} is free\nhint: pass --temp-dir DIR on a larger file system (or set restore.temp_dir)",
                        dir.display(),
                        human_bytes(needed),
                        human_bytes(avail)
                    ),
                ));
            }
            Ok(())
        }
        Err(e) => Err(Error::new(
            Kind::Failed,
            format!(
                "cannot use temp dir {}: {e}\nhint: pass --temp-dir DIR",
                dir.display()
            ),
        )),
    }
}

/// Download, verify and decrypt the dump into `path`. On any error the file is removed.
/// `durable`: fsync before returning (a file the operator keeps); a temp archive that
/// pg_restore reads at once is served from the page cache and need not wait for the disk.
pub async fn fetch_archive(
    ctx: &Context,
    dump: &ObjectRecord,
    identities: &Identities,
    path: &Path,
    durable: bool,
) -> Result<()> {
    let (size, reader) = ctx
        .store
        .get_reader(&dump.key)
        .await
        .map_err(|e| Error::from(e).context(format!("fetching {}", dump.key)))?;
    if size != dump.bytes {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "`{}` is {} bytes but the manifest records {}: the object is truncated or was replaced\nhint: restore an older backup (`dr list`) and investigate the repository",
                dump.key, size, dump.bytes
            ),
        ));
    }
    // Decrypted data: readable by the owner only, like the identity.
    let file = private_file(path)
        .map_err(|e| Error::new(Kind::Failed, format!("creating {}: {e}", path.display())))?;
    let bar = crate::progress::bytes_bar(ctx.progress, "fetching", Some(dump.raw_bytes));
    let bar2 = bar.clone();
    let sync_reader = SyncIoBridge::new(reader);
    let key = dump.key.clone();
    let sha = dump.sha256.clone();
    let ids = identities.clone();
    let cancel = ctx.cancel.clone();
    let work = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(1024 * 1024, file);
        let stats = dr_stream::decode(sync_reader, &mut out, &ids, Some(&sha), &key, &mut |n| {
            bar2.set_position(n);
        })?;
        out.flush().map_err(|e| dr_stream::StreamError::Io {
            stage: "writing the archive".into(),
            source: e,
        })?;
        if durable {
            out.get_ref()
                .sync_all()
                .map_err(|e| dr_stream::StreamError::Io {
                    stage: "syncing the archive".into(),
                    source: e,
                })?;
        }
        Ok::<_, dr_stream::StreamError>(stats)
    });
    let result = tokio::select! {
        r = work => r.map_err(|e| Error::new(Kind::Failed, format!("decrypt thread failed: {e}")))
            .and_then(|r| r.map_err(Error::from)),
        _ = cancel.cancelled() => Err(Error::interrupted("the restore")),
    };
    bar.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(e.context(format!("backup object {}", dump.key)));
    }
    Ok(())
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn write_file_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    private_file(&partial)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", path.display())))
}

type Outcome = (Vec<String>, BTreeMap<String, (i64, i64)>, Vec<String>);

#[allow(clippy::too_many_arguments)]
async fn restore_into(
    ctx: &Context,
    m: &Manifest,
    details: &BackupDetails,
    target: &TargetState,
    archive: &Path,
    globals: Option<&[u8]>,
    jobs: u32,
    opts: &RestoreOptions,
) -> Result<Outcome> {
    let conn = &target.conn;
    let bin_dir = ctx.config.backup.pg_bin_dir.as_deref();
    // pg_restore must read the archive (>= the dumping major) and speak to the target.
    // Prefer the target's major; any pg_restore at least as new as the archive's pg_dump works.
    // The archive's format is the dumping pg_dump's (which may be newer than its server).
    let archive_major = dr_pg::parse_version_output(&m.pg_dump_version)
        .unwrap_or(m.server_major)
        .max(m.server_major);
    let pg_restore = match dr_pg::find_tool("pg_restore", target.major.max(archive_major), bin_dir)
    {
        Ok(t) => t,
        Err(_) => dr_pg::find_tool("pg_restore", archive_major, bin_dir)?,
    };
    let mut errors = Vec::new();
    if let Some(sql) = globals {
        errors.extend(apply_globals(conn, sql).await?);
    }
    if !target.exists {
        let admin = conn.connect_admin().await?;
        let sql = format!(
            "create database {} template template0",
            dr_pg::quote_ident(conn.dbname())
        );
        admin.batch_execute(&sql).await.map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("creating database {}: {e}", conn.dbname()),
            )
        })?;
        tracing::info!("created database {}", conn.dbname());
    }
    // The children's sessions get a name of their own: to watch their lock waits, and to end
    // them if the restore is stopped.
    let session_name = restore_session_name();
    let child_conn = conn.with_application_name(&session_name);
    let lock_wait = ctx.config.restore.lock_wait_timeout_secs;
    let mut args = vec![
        "--no-password".to_string(),
        format!("--dbname={}", conn.dbname_arg()),
        format!("--jobs={jobs}"),
        "--verbose".to_string(),
    ];
    if opts.clean {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    if opts.no_owner {
        args.push("--no-owner".into());
        args.push("--no-acl".into());
    }
    let _list_file;
    if !opts.tables.is_empty() || !opts.schemas.is_empty() {
        let list = selective_list(&pg_restore.path, archive, opts).await?;
        let mut f = tempfile::NamedTempFile::new()
            .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
        f.write_all(list.as_bytes())
            .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
        args.push(format!("--use-list={}", f.path().display()));
        _list_file = f;
    }
    args.push(archive.display().to_string());
    tracing::info!(jobs, "pg_restore started");
    let child = ChildProcess::spawn(
        &pg_restore.path,
        &args,
        Some(&child_conn),
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    )?;
    let spinner = crate::progress::spinner(ctx.progress, "restoring");
    let mut watcher = tokio::spawn(watch_lock_waits(
        conn.clone(),
        session_name.clone(),
        (lock_wait > 0).then(|| Duration::from_secs(lock_wait)),
    ));
    let mut gave_up: Option<String> = None;
    let stop = async {
        tokio::select! {
            () = ctx.cancel.cancelled() => {}
            r = &mut watcher => gave_up = r.ok(),
        }
    };
    let waited = child.wait_or_stop(stop).await;
    watcher.abort();
    spinner.finish_and_clear();
    let Some(finished) = waited else {
        // pg_restore and its workers are gone; their sessions must be too before we report.
        match dr_pg::end_sessions(conn, &session_name, Duration::from_secs(10)).await {
            Ok(0) => {}
            Ok(n) => tracing::error!(
                "{n} session(s) of the stopped restore are still on the server (application_name `{session_name}`)"
            ),
            Err(e) => tracing::error!("could not end the stopped restore's sessions: {e}"),
        }
        if let Some(why) = gave_up {
            return Err(Error::new(
                Kind::Failed,
                format!(
                    "the restore into {conn} was stopped: {why}\nhint: the database is partially restored; stop the application's connections to the target (or restore into a new database name), then restore again with --clean"
                ),
            ));
        }
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "the restore into {conn} was interrupted by a signal; pg_restore and its workers were stopped\nhint: the database is partially restored: restore again with --clean (or drop it and restore into a new name)"
            ),
        ));
    };
    match finished {
        Ok(f) => errors.extend(f.errors),
        Err(dr_pg::PgError::Failed(pf)) => {
            let lines: Vec<String> = pf
                .stderr
                .lines()
                .filter(|l| l.contains("error:") || l.contains("ERROR") || l.contains("FATAL"))
                .map(str::to_string)
                .collect();
            if lines.is_empty() {
                errors.push(format!("{} ({})", pf.command, pf.status));
                errors.extend(pf.stderr.lines().map(str::to_string));
            } else {
                errors.extend(lines);
            }
        }
        Err(e) => return Err(e.into()),
    }
    // Compare counts of the tables that were meant to be restored.
    let (expected, _) = selected_counts(details, opts);
    let actual: BTreeMap<String, i64> =
        dr_pg::count_tables_parallel(conn, usize::try_from(jobs).unwrap_or(2))
            .await?
            .into_iter()
            .map(|t| (format!("{}.{}", t.schema, t.name), t.rows))
            .collect();
    let mut tables = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (name, exp) in &expected {
        match actual.get(name) {
            Some(a) => {
                tables.insert(name.clone(), (*exp, *a));
                if a != exp {
                    mismatches.push(format!(
                        "table {name}: backup recorded {exp} rows, restored {a}"
                    ));
                }
            }
            None => mismatches.push(format!(
                "table {name}: missing after restore (backup recorded {exp} rows)"
            )),
        }
    }
    Ok((errors, tables, mismatches))
}

/// A name no other session on the server has: `dr-restore-PID-N`.
fn restore_session_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "dr-restore-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, AtomicOrdering::Relaxed)
    )
}

/// How often a restore that waits for a lock says so.
const LOCK_REPORT_EVERY: Duration = Duration::from_secs(10);

/// While pg_restore runs: every [`LOCK_REPORT_EVERY`], log each of its sessions that waits
/// for a lock, and who holds it — a restore blocked by the app's open transaction must not
/// look like a slow one. Returns (ending the restore) once a statement has waited `limit`:
/// the archive's preamble sets `lock_timeout = 0`, so a server setting cannot do this, and
/// cancelling statement after statement would only make every next one wait as long.
async fn watch_lock_waits(conn: ConnInfo, session_name: String, limit: Option<Duration>) -> String {
    let mut client = None;
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if client.is_none() {
            client = conn.connect().await.ok();
        }
        let Some(c) = &client else { continue };
        let waits = match dr_pg::lock_waits(c, &session_name).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("cannot look for lock waits: {e}");
                client = None;
                continue;
            }
        };
        if let Some(limit) = limit {
            if let Some(w) = waits
                .iter()
                .find(|w| u64::try_from(w.waiting_secs).unwrap_or(0) >= limit.as_secs())
            {
                return format!(
                    "gave up waiting for a lock after {} s (restore.lock_wait_timeout_secs): {w}",
                    limit.as_secs()
                );
            }
        }
        if last_report.elapsed() >= LOCK_REPORT_EVERY {
            last_report = Instant::now();
            for w in waits.iter().filter(|w| w.waiting_secs >= 5) {
                tracing::warn!("restore waiting for a lock: {w}");
            }
        }
    }
}

/// Create the roles (and tablespaces) the target lacks; never alter existing ones.
/// Returns error lines (a failure here is reported, and the restore continues).
pub async fn apply_globals(conn: &ConnInfo, sql: &[u8]) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(sql);
    let admin = conn.connect_admin().await?;
    let existing: BTreeSet<String> = admin
        .query("select rolname::text from pg_roles", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing roles: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let spaces: BTreeSet<String> = admin
        .query("select spcname::text from pg_tablespace", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing tablespaces: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut errors = Vec::new();
    let mut created = 0;
    for stmt in globals_statements(&text, &existing, &spaces) {
        match admin.batch_execute(&stmt).await {
            Ok(()) => {
                if stmt.starts_with("CREATE ") {
                    created += 1;
                }
            }
            Err(e) => {
                let msg = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                errors.push(format!("globals: {msg} (in: {})", first_words(&stmt)));
            }
        }
    }
    tracing::info!(
        created,
        skipped_existing = existing.len(),
        "roles and tablespaces applied"
    );
    Ok(errors)
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

fn unquote(name: &str) -> String {
    let n = name.trim();
    if let Some(inner) = n.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        inner.replace("\"\"", "\"")
    } else {
        n.to_string()
    }
}

/// The statements of a `pg_dumpall --globals-only` script that create or configure objects the
/// target lacks. Statements touching existing roles or tablespaces are dropped.
pub fn globals_statements(
    text: &str,
    roles: &BTreeSet<String>,
    spaces: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut new_roles = BTreeSet::new();
    let mut cur = String::new();
    for line in text.lines() {
        if cur.is_empty()
            && (line.starts_with("--") || line.trim().is_empty() || line.starts_with('\\'))
        {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let stmt = std::mem::take(&mut cur);
        let s = stmt.trim();
        let keep = if let Some(rest) = s.strip_prefix("CREATE ROLE ") {
            let name = unquote(rest.trim_end_matches(';'));
            let missing = !roles.contains(&name);
            if missing {
                new_roles.insert(name);
            }
            missing
        } else if let Some(rest) = s.strip_prefix("ALTER ROLE ") {
            let name = role_name_prefix(rest);
            new_roles.contains(&name)
        } else if let Some(rest) = s.strip_prefix("CREATE TABLESPACE ") {
            let name = role_name_prefix(rest);
            !spaces.contains(&name)
        } else if let Some(rest) = s.strip_prefix("GRANT ") {
            // Memberships only for roles created here: existing roles are never altered.
            rest.rsplit_once(" TO ")
                .map(|(_, to)| role_name_prefix(to))
                .is_some_and(|grantee| new_roles.contains(&grantee))
        } else {
            // Session settings only; anything else touching existing objects is dropped.
            s.starts_with("SET ")
        };
        if keep {
            out.push(s.to_string());
        }
    }
    out
}

/// The (possibly quoted) identifier at the start of `s`.
fn role_name_prefix(s: &str) -> String {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    name.push('"');
                    chars.next();
                } else {
                    break;
                }
            } else {
                name.push(c);
            }
        }
        name
    } else {
        s.split(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("")
            .to_string()
    }
}

/// pg_dump's identifier quoting (fmtId without the keyword list).
fn fmt_id(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        dr_pg::quote_ident(s)
    }
}

/// A `pg_restore -L` list holding the selected tables with their data, indexes, constraints,
/// defaults, triggers and owned sequences, plus everything in the selected schemas.
async fn selective_list(
    pg_restore: &Path,
    archive: &Path,
    opts: &RestoreOptions,
) -> Result<String> {
    let run = |args: Vec<String>| async move {
        let mut child = ChildProcess::spawn(
            pg_restore,
            &args,
            None,
            std::process::Stdio::null(),
            std::process::Stdio::piped(),
        )?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout() {
            use tokio::io::AsyncReadExt;
            stdout
                .read_to_end(&mut out)
                .await
                .map_err(|e| Error::new(Kind::Failed, format!("reading pg_restore's list: {e}")))?;
        }
        child.wait().await.map_err(|e| {
            Error::from(e).context("listing the archive's contents for the selective restore")
        })?;
        Ok::<_, Error>(String::from_utf8_lossy(&out).into_owned())
    };
    let list = run(vec!["--list".into(), archive.display().to_string()]).await?;
    let script = run(vec![
        "--schema-only".into(),
        "--file=-".into(),
        archive.display().to_string(),
    ])
    .await?;
    // "-- Name: X; Type: T; Schema: S; Owner: O" → following SQL.
    let mut sql_of: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut key: Option<(String, String, String)> = None;
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix("-- Name: ") {
            let mut name = "";
            let mut typ = "";
            let mut schema = "";
            for part in rest.split("; ") {
                if let Some(v) = part.strip_prefix("Type: ") {
                    typ = v;
                } else if let Some(v) = part.strip_prefix("Schema: ") {
                    schema = v;
                } else if name.is_empty() {
                    name = part;
                }
            }
            key = Some((typ.to_string(), schema.to_string(), name.to_string()));
            continue;
        }
        if let Some(k) = &key {
            let e = sql_of.entry(k.clone()).or_default();
            e.push_str(line);
            e.push('\n');
        }
    }
    let wanted: Vec<(String, String)> = opts
        .tables
        .iter()
        .map(|t| {
            let (s, n) = split_table(t);
            (s.to_string(), n.to_string())
        })
        .collect();
    let refs: Vec<String> = wanted
        .iter()
        .map(|(s, n)| format!("{}.{}", fmt_id(s), fmt_id(n)))
        .collect();
    // Sequences used by the selected tables' defaults.
    let mut sequences: BTreeSet<String> = BTreeSet::new();
    for ((typ, _, _), sql) in &sql_of {
        if typ == "DEFAULT"
            && refs
                .iter()
                .any(|r| sql.contains(&format!("{r} ")) || sql.contains(&format!("{r}\n")))
        {
            if let Some(i) = sql.find("nextval('") {
                let rest = &sql[i + 9..];
                if let Some(end) = rest.find('\'') {
                    sequences.insert(rest[..end].to_string());
                }
            }
        }
    }
    const DESCS: [&str; 14] = [
        "MATERIALIZED VIEW DATA",
        "SEQUENCE OWNED BY",
        "FK CONSTRAINT",
        "SEQUENCE SET",
        "TABLE DATA",
        "ROW SECURITY",
        "CONSTRAINT",
        "SEQUENCE",
        "TRIGGER",
        "DEFAULT",
        "POLICY",
        "INDEX",
        "TABLE",
        "SCHEMA",
    ];
    let mut out = String::new();
    for line in list.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // "ID; OID OID DESC SCHEMA TAG OWNER"
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut it = rest.splitn(3, ' ');
        let (_, _, rest) = (it.next(), it.next(), it.next().unwrap_or(""));
        let Some(desc) = DESCS.iter().find(|d| rest.starts_with(&format!("{d} "))) else {
            // Other entry kinds (extensions, functions, types...) are kept for selected schemas only.
            if opts
                .schemas
                .iter()
                .any(|s| rest.contains(&format!(" {s} ")))
            {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        };
        let after = &rest[desc.len() + 1..];
        let (schema, tag_owner) = after.split_once(' ').unwrap_or((after, ""));
        let tag = tag_owner
            .rsplit_once(' ')
            .map(|(t, _)| t)
            .unwrap_or(tag_owner);
        let keep = if opts.schemas.iter().any(|s| s == schema) {
            true
        } else {
            match *desc {
                "TABLE" | "TABLE DATA" => wanted.iter().any(|(s, n)| s == schema && n == tag),
                "CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "DEFAULT" | "POLICY" => wanted
                    .iter()
                    .any(|(s, n)| s == schema && tag.starts_with(&format!("{n} "))),
                "ROW SECURITY" => wanted.iter().any(|(s, n)| s == schema && n == tag),
                "INDEX" => sql_of
                    .get(&("INDEX".to_string(), schema.to_string(), tag.to_string()))
                    .is_some_and(|sql| {
                        refs.iter().any(|r| {
                            sql.contains(&format!(" ON {r} "))
                                || sql.contains(&format!(" ON ONLY {r} "))
                        })
                    }),
                "SEQUENCE" | "SEQUENCE SET" | "SEQUENCE OWNED BY" => {
                    sequences.contains(&format!("{}.{}", fmt_id(schema), fmt_id(tag)))
                }
                _ => false,
            }
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Err(Error::config(format!(
            "nothing in the backup matches {}\nhint: `dr show latest` lists the tables (names are SCHEMA.TABLE)",
            opts.tables.iter().chain(opts.schemas.iter()).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_create_only_missing_roles() {
        let script = "--\n-- Roles\n--\n\nCREATE ROLE alice;\nALTER ROLE alice WITH NOSUPERUSER LOGIN PASSWORD 'x';\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\nCREATE ROLE \"Bob \"\"B\";\nALTER ROLE \"Bob \"\"B\" WITH LOGIN;\nGRANT alice TO \"Bob \"\"B\" GRANTED BY postgres;\nGRANT alice TO postgres GRANTED BY postgres;\n";
        let roles: BTreeSet<String> = ["postgres".to_string()].into();
        let out = globals_statements(script, &roles, &BTreeSet::new());
        assert_eq!(
            out,
            vec![
                "CREATE ROLE alice;",
                "ALTER ROLE alice WITH NOSUPERUSER LOGIN PASSWORD 'x';",
                "CREATE ROLE \"Bob \"\"B\";",
                "ALTER ROLE \"Bob \"\"B\" WITH LOGIN;",
                "GRANT alice TO \"Bob \"\"B\" GRANTED BY postgres;",
            ]
        );
    }

    #[test]
    fn identifiers_are_quoted_like_pg_dump() {
        assert_eq!(fmt_id("users"), "users");
        assert_eq!(fmt_id("Users"), "\"Users\"");
        assert_eq!(fmt_id("Sales ü"), "\"Sales ü\"");
    }

    #[test]
    fn table_names_default_to_public() {
        assert_eq!(split_table("users"), ("public", "users"));
        assert_eq!(split_table("app.users"), ("app", "users"));
    }
}
