//! The restore plan shown before anything happens, and which tables the operator selected.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_catalog::{BackupDetails, Manifest};
use serde::Serialize;

use super::layout::{bytes_read, temp_needed, Sections};
use super::target::TargetState;
use super::{Request, RestoreOptions};
use crate::{human_bytes, Error, Result};

/// What is going to happen, shown before it happens.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub backup_id: String,
    pub target: String,
    pub backup_started_at: String,
    pub stored_bytes: u64,
    pub archive_bytes: u64,
    /// Format 2: how many data streams the backup has (restored up to `jobs` at once);
    /// `None` for a single archive (format 1).
    pub data_streams: Option<usize>,
    /// Every object is downloaded and checked before the target is touched.
    pub check_first: bool,
    pub server_version: String,
    pub destination: String,
    pub destination_state: String,
    /// The restore changes something that exists: the target database, or (with
    /// `--with-globals`) the server's roles. dr asks first, and without a terminal to ask on
    /// refuses unless `--yes`. A restore into a database dr creates changes nothing existing.
    pub changes_existing: bool,
    pub tables: usize,
    pub rows: i64,
    pub jobs: u32,
    pub temp_dir: String,
    pub temp_bytes_needed: u64,
    pub selection: Vec<String>,
    /// How long the restore should take, from the newest verification of this target that
    /// measured one (scaled by archive size); `None` when none did.
    pub estimated_restore: Option<crate::rto::Estimate>,
    /// `--with-globals`: roles it would create with powers, each with what it gets and
    /// whether `--allow-role` names it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub powerful_roles: Vec<String>,
    /// `--at` of a target with WAL: the point is recovered in a sandbox first, and the
    /// database streamed from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryPlan>,
    /// `--at` answered with a logical backup: how much later the time asked for is than the
    /// backup (what was written in between is not in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_gap: Option<AtGap>,
}

/// The sandbox of a point-in-time restore into a database: which base backup and WAL
/// recover it, where, and the disk it takes.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPlan {
    /// Base backup, timeline, WAL and window, as `dr restore --to-dir --dry-run` says them
    /// (`dir` is the temp dir the sandbox is made in).
    pub pitr: super::pitr::PitrPlan,
    /// Disk the sandbox needs: the base backup's raw size and the WAL it replays.
    pub sandbox_bytes_needed: u64,
    /// The database dumped from the sandbox.
    pub database: String,
    /// Seconds the sandbox's recovery should take, at the rates the newest passed drill
    /// measured; None before any drill.
    pub estimated_recovery_seconds: Option<f64>,
    /// That drill.
    pub measured_by: Option<crate::rto::DrillMeasured>,
}

/// `--at TIME` answered with the newest logical backup before it.
#[derive(Debug, Clone, Serialize)]
pub struct AtGap {
    pub at: String,
    pub backup_taken: String,
    /// How much later TIME is than the backup, in seconds.
    pub later_seconds: i64,
}

impl AtGap {
    pub(super) fn new(at: DateTime<Utc>, taken: DateTime<Utc>) -> AtGap {
        AtGap {
            at: crate::time::format(at),
            backup_taken: crate::time::format(taken),
            later_seconds: (at - taken).num_seconds().max(0),
        }
    }
}

impl std::fmt::Display for AtGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--at {} is {} later than this backup ({}): what was written in between is not in it (recovery to any second needs [targets.wal] and a base backup: `dr backup --physical`)",
            self.at,
            crate::rto::human_seconds(self.later_seconds as f64),
            self.backup_taken
        )
    }
}

/// The plan's lines for roles with powers.
pub(super) fn powerful_roles(roles: &[dr_pg::PowerfulRole], opts: &RestoreOptions) -> Vec<String> {
    roles
        .iter()
        .map(|r| {
            let allowed = opts.allow_any_role || opts.allow_roles.contains(&r.name);
            format!(
                "{r}: {}",
                if allowed {
                    "allowed by --allow-role"
                } else {
                    "refused: not named by --allow-role"
                }
            )
        })
        .collect()
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.recovery {
            return self.fmt_recovery(r, f);
        }
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
        match self.data_streams {
            Some(n) => writeln!(
                f,
                "  streams      pre-data piped, {n} data stream(s) piped ({} at once), post-data from a temp file",
                self.jobs.min(u32::try_from(n).unwrap_or(u32::MAX))
            )?,
            None => writeln!(
                f,
                "  archive      one archive (older backup format): staged in the temp dir and checked, then restored"
            )?,
        }
        if self.data_streams.is_some() && !self.destination_state.starts_with("new file") {
            if self.check_first {
                writeln!(f, "  check first  yes: every object is downloaded and checked before the target is touched (--no-check-first to skip)")?;
            } else {
                writeln!(f, "  check first  no: objects are checked as they stream; on a failure the new database is dropped (--check-first to check before)")?;
            }
        }
        for r in &self.powerful_roles {
            writeln!(f, "  new role     {r}")?;
        }
        if let Some(gap) = &self.at_gap {
            writeln!(f, "  missing      {gap}")?;
        }
        self.fmt_estimate(f, "estimated")?;
        write!(
            f,
            "  temp disk    {} in {}",
            human_bytes(self.temp_bytes_needed),
            self.temp_dir
        )
    }
}

impl Plan {
    /// The estimate line, under `label` ("estimated").
    fn fmt_estimate(&self, f: &mut std::fmt::Formatter<'_>, label: &str) -> std::fmt::Result {
        match &self.estimated_restore {
            Some(e) => writeln!(
                f,
                "  {label:<12} ~{} (an estimate: fetch+decrypt+restore took {} when `dr verify` restored backup {} at {}{})",
                crate::rto::human_seconds(e.seconds),
                crate::rto::human_seconds(e.measured_seconds),
                e.measured_backup_id,
                crate::time::format(e.measured_at),
                if e.scaled && !self.selection.is_empty() {
                    format!(
                        ", scaled from its {} archive to the sections this selection reads",
                        human_bytes(e.measured_archive_bytes)
                    )
                } else if e.scaled {
                    format!(
                        ", scaled from its {} archive",
                        human_bytes(e.measured_archive_bytes)
                    )
                } else {
                    String::new()
                }
            )?,
            None => writeln!(
                f,
                "  {label:<12} unknown: no verification yet: run `dr verify --target {}`",
                self.target
            )?,
        }
        Ok(())
    }

    /// The plan of a point-in-time restore into a database: the recovery, then the restore.
    fn fmt_recovery(&self, r: &RecoveryPlan, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &r.pitr;
        writeln!(f, "restore plan")?;
        writeln!(
            f,
            "  point        `{}` as of {} (database {})",
            self.target, p.recovery_target, r.database
        )?;
        writeln!(
            f,
            "  base backup  {} (PostgreSQL {}, WAL {}..{}, ended {}), {} raw",
            p.base_id,
            p.server_major,
            p.base_start_lsn,
            p.base_stop_lsn,
            p.base_stopped_at,
            human_bytes(p.base_bytes)
        )?;
        writeln!(
            f,
            "  WAL          {} segments on timeline {} ({}), {}..{}, {} stored",
            p.segments,
            p.timeline,
            p.timeline_reason,
            p.first_segment,
            p.last_segment,
            human_bytes(p.wal_bytes)
        )?;
        writeln!(f, "  window       {}", p.window)?;
        writeln!(
            f,
            "  sandbox      recovered in {} (needs {}: the base backup and the WAL it replays), a local PostgreSQL {} on a private socket, promoted at the point, stopped and removed afterwards",
            p.dir.display(),
            human_bytes(r.sandbox_bytes_needed),
            p.server_major
        )?;
        writeln!(
            f,
            "  into         {} ({})",
            self.destination, self.destination_state
        )?;
        if !self.selection.is_empty() {
            writeln!(f, "  only         {}", self.selection.join(", "))?;
        }
        writeln!(f, "  jobs         {}", self.jobs)?;
        // As `restore::live` decides: dr copies the rows itself for a whole database, from
        // the server major `dr_pg::copy::copy_tables` copies.
        if self.selection.is_empty() && p.server_major >= dr_pg::copy::MIN_MAJOR {
            writeln!(
                f,
                "  streams      from the sandbox in one snapshot: the schema piped through pg_dump and pg_restore, the rows copied by {} worker(s) with COPY (written frozen into a new database) and counted as they pass, post-data from a temp file; the counts compared with the restored database's",
                self.jobs
            )?;
        } else {
            writeln!(
                f,
                "  streams      from the sandbox in one snapshot: pre-data piped, up to {} data stream(s) piped, post-data from a temp file; row counts taken in the snapshot and compared",
                self.jobs
            )?;
        }
        for role in &self.powerful_roles {
            writeln!(f, "  new role     {role}")?;
        }
        match (&r.estimated_recovery_seconds, &r.measured_by) {
            (Some(s), Some(m)) => writeln!(
                f,
                "  estimated    the recovery: {} (the drill of base {} on {}: base at {}/s{}); then the restore from the sandbox, as a logical restore takes:",
                crate::rto::human_seconds(*s),
                m.backup_id,
                crate::time::format(m.verified_at),
                human_bytes(m.base_bytes_per_second as u64),
                m.replay_bytes_per_second
                    .map(|r| format!(", WAL replayed at {}/s", human_bytes(r as u64)))
                    .unwrap_or_default()
            )?,
            _ => writeln!(
                f,
                "  estimated    the recovery: not measured yet (no drill of this target has run: `dr verify --pitr`); then the restore from the sandbox, as a logical restore takes:"
            )?,
        }
        self.fmt_estimate(f, "restore")?;
        write!(
            f,
            "  temp disk    {} for the sandbox in {}, plus the post-data section{}",
            human_bytes(r.sandbox_bytes_needed),
            self.temp_dir,
            if self.selection.is_empty() {
                ""
            } else {
                " and the data streams holding the selection"
            }
        )
    }
}

/// The `--table`s and `--schema`s as a [`dr_pg::Selection`]: names as `dr show` prints them
/// (`schema.table`) or quoted like psql (`"Sales Data"."Order Items"`).
pub(super) fn selection(opts: &RestoreOptions) -> Result<dr_pg::Selection> {
    let bad = |e: String| {
        Error::config(format!("{e}; nothing was changed")).with_hint(
            "write a table as SCHEMA.TABLE, as `dr show` prints it, or quoted: '\"Sales Data\".\"Order Items\"'",
        )
    };
    Ok(dr_pg::Selection {
        schemas: opts
            .schemas
            .iter()
            .map(|s| dr_pg::parse_schema_name(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(bad)?,
        tables: opts
            .tables
            .iter()
            .map(|t| dr_pg::parse_table_name(t))
            .collect::<std::result::Result<_, _>>()
            .map_err(bad)?,
    })
}

/// `--clean` with `--table`/`--schema` is refused, before anything happens.
pub(super) fn check_clean(opts: &RestoreOptions) -> Result<()> {
    if opts.clean && (!opts.tables.is_empty() || !opts.schemas.is_empty()) {
        return Err(Error::config(
            "--clean cannot be combined with --table or --schema: a selective restore recreates every schema, type, function and table definition of the backup, and --clean would drop them all first; nothing was changed",
        )
        .with_hint("restore the selection into a new database (`--to` with a new name) and copy from there"));
    }
    Ok(())
}

/// Every `--table` names a table of the backup and every `--schema` a schema holding one:
/// a typo must fail before a database is created or anything is fetched.
pub(super) fn check_selection(
    details: &BackupDetails,
    opts: &RestoreOptions,
    m: &Manifest,
) -> Result<()> {
    check_names(
        details,
        opts,
        &format!("backup {} of `{}`", m.id, m.target),
        &format!(
            "`dr show {} --target {}` lists its tables as SCHEMA.TABLE",
            m.id, m.target
        ),
    )
}

/// Every `--table` and `--schema` names something `details` holds; else an error saying
/// which are not in `what` ("backup ID of `app`"), with `hint`.
pub(super) fn check_names(
    details: &BackupDetails,
    opts: &RestoreOptions,
    what: &str,
    hint: &str,
) -> Result<()> {
    let selection = selection(opts)?;
    check_clean(opts)?;
    let mut unknown = Vec::new();
    for (t, (s, n)) in opts.tables.iter().zip(&selection.tables) {
        if !details
            .tables
            .iter()
            .any(|x| &x.schema == s && &x.name == n)
        {
            unknown.push(format!("table {t}"));
        }
    }
    for (given, schema) in opts.schemas.iter().zip(&selection.schemas) {
        let known = details.tables.iter().any(|x| &x.schema == schema)
            || details.sequences.iter().any(|x| &x.schema == schema);
        if !known {
            unknown.push(format!("schema {given}"));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "{what} holds no {}; nothing was changed",
        unknown.join(", ")
    ))
    .with_hint(hint.to_string()))
}

/// The tables whose rows a restore brings (all of them without a selection) with the row
/// counts the backup recorded, and their total. Tables a selective restore creates empty
/// are not among them.
pub(super) fn selected_counts(
    details: &BackupDetails,
    opts: &RestoreOptions,
) -> (BTreeMap<String, i64>, i64) {
    // Names that do not parse were refused by `check_selection`.
    let selection = selection(opts).unwrap_or_default();
    let all = selection.tables.is_empty() && selection.schemas.is_empty();
    let sel: BTreeMap<String, i64> = details
        .tables
        .iter()
        .filter(|t| all || selection.has_table(&t.schema, &t.name))
        .map(|t| (t.qualified(), t.rows))
        .collect();
    let rows = sel.values().sum();
    (sel, rows)
}

/// The plan of `r` into `target` (none: `--to-file` alone): what will be read, where it
/// goes and what is there, how long it should take. `roles`: the roles `--with-globals`
/// would create with powers.
pub(super) fn build(
    r: &Request<'_>,
    sections: Option<&Sections<'_>>,
    target: Option<&TargetState>,
    measured: Option<&crate::rto::Measured>,
    roles: Option<&[dr_pg::PowerfulRole]>,
) -> Plan {
    let (m, details, opts) = (r.m, r.details, r.opts);
    let archive_bytes = m.archive_raw_bytes();
    let (expected_tables, expected_rows) = selected_counts(details, opts);
    Plan {
        backup_id: m.id.to_string(),
        target: m.target.clone(),
        backup_started_at: m.started_at.to_rfc3339(),
        stored_bytes: m.stored_bytes(),
        archive_bytes,
        data_streams: sections.map(|s| s.data.len()),
        check_first: match (target, sections) {
            (Some(t), Some(_)) => opts.check_first.unwrap_or(t.exists),
            // A single archive is staged and checked whole before the target is touched.
            (Some(_), None) => true,
            (None, _) => false,
        },
        server_version: m.server_version.clone(),
        destination: match (target, &opts.to_file) {
            (Some(t), _) => t.conn.to_string(),
            (None, Some(p)) => format!("file {}", p.display()),
            (None, None) => "nowhere".into(),
        },
        destination_state: destination_state(target, opts),
        changes_existing: target.is_some_and(|t| t.exists || opts.with_globals),
        tables: expected_tables.len(),
        rows: expected_rows,
        jobs: r.jobs,
        temp_dir: r.temp_dir.display().to_string(),
        temp_bytes_needed: match (sections, target) {
            (_, None) => 0,
            // The sections are read back from the --to-file directory.
            (Some(_), Some(_)) if opts.to_file.is_some() => 0,
            (Some(s), Some(_)) => temp_needed(s, details, opts),
            (None, Some(_)) => archive_bytes,
        },
        selection: super::layout::described_selection(opts),
        // A selection reads only its sections (format 2): scaled to what it reads.
        estimated_restore: measured.map(|x| {
            crate::rto::estimate(
                x,
                match sections {
                    Some(s) => bytes_read(s, details, opts),
                    None => archive_bytes,
                },
            )
        }),
        powerful_roles: roles
            .map(|roles| powerful_roles(roles, opts))
            .unwrap_or_default(),
        recovery: None,
        at_gap: match &opts.selector {
            Some(crate::repo::Selector::At(at)) => Some(AtGap::new(*at, m.started_at)),
            _ => None,
        },
    }
}

/// What the destination holds, for the plan.
pub(super) fn destination_state(target: Option<&TargetState>, opts: &RestoreOptions) -> String {
    match target {
        Some(t) if !t.exists => "database does not exist: it will be created".into(),
        Some(t) if t.user_objects == 0 => "empty database".into(),
        Some(t) => format!(
            "holds {} user objects{}",
            t.user_objects,
            if opts.clean {
                ": --clean drops and recreates the backup's objects in it"
            } else if opts.force {
                ": --force restores on top of them"
            } else {
                ""
            }
        ),
        None => "new file".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(estimated_restore: Option<crate::rto::Estimate>) -> Plan {
        Plan {
            backup_id: "20261122T020000Z".into(),
            target: "app".into(),
            backup_started_at: "2026-11-22T02:00:00Z".into(),
            stored_bytes: 1,
            archive_bytes: 2000,
            data_streams: Some(3),
            check_first: false,
            server_version: "17.2".into(),
            destination: "postgres://h/app".into(),
            destination_state: "empty database".into(),
            changes_existing: true,
            tables: 1,
            rows: 1,
            jobs: 2,
            temp_dir: "/tmp".into(),
            temp_bytes_needed: 2000,
            selection: vec![],
            estimated_restore,
            powerful_roles: vec![],
            recovery: None,
            at_gap: None,
        }
    }

    #[test]
    fn the_plan_says_the_estimate_and_where_it_was_measured() {
        let m = crate::rto::Measured {
            backup_id: "20261120T020000Z".parse().expect("id"),
            seconds: 90.0,
            archive_bytes: 1000,
            verified_at: "20261121T030000Z"
                .parse::<dr_catalog::BackupId>()
                .expect("id")
                .time(),
        };
        let text = plan(Some(crate::rto::estimate(&m, 2000))).to_string();
        assert!(
            text.contains("estimated    ~3m00s (an estimate: fetch+decrypt+restore took 1m30s when `dr verify` restored backup 20261120T020000Z at 2026-11-21T03:00:00Z, scaled from its 1000 B archive)"),
            "{text}"
        );
        let text = plan(None).to_string();
        assert!(
            text.contains("no verification yet: run `dr verify --target app`"),
            "{text}"
        );
        let v = serde_json::to_value(plan(None)).expect("json");
        assert!(v["estimated_restore"].is_null());
    }

    #[test]
    fn tables_and_schemas_are_read_like_dr_show_prints_them_or_quoted() {
        let opts = RestoreOptions {
            tables: vec![
                "users".into(),
                "audit.events".into(),
                "\"Sales Data\".\"Order Items\"".into(),
            ],
            schemas: vec!["\"Sales Data\"".into()],
            ..Default::default()
        };
        let sel = selection(&opts).expect("valid names");
        assert_eq!(
            sel.tables,
            [
                ("public".to_string(), "users".to_string()),
                ("audit".to_string(), "events".to_string()),
                ("Sales Data".to_string(), "Order Items".to_string()),
            ]
        );
        assert_eq!(sel.schemas, ["Sales Data"]);
        let bad = RestoreOptions {
            tables: vec!["\"open".into()],
            ..Default::default()
        };
        assert!(selection(&bad).is_err());
    }
}
