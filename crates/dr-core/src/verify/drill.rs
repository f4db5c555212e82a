//! `dr verify --pitr`: a drill. A base backup and the WAL after it are recovered in a
//! throwaway sandbox (the one `dr restore --at … --to` uses: local server, private socket,
//! `archive_mode = off`, so a drill never writes into the archive), to a point of its window,
//! and proven:
//!
//! - the WAL from the base backup's end to the newest archived is continuous (the plan: a
//!   missing segment is named);
//! - the base backup's files match its `backup_manifest` (`pg_verifybackup`, before recovery
//!   changes them);
//! - recovery reached the point (it did not end early at a gap or on another timeline);
//! - the recovered copy is sound (`pg_amcheck`: heap and B-tree), where the server has the
//!   `amcheck` extension;
//! - exact row counts where dr knows them: when a dump of the target recorded the WAL position
//!   of its snapshot (`wal_level = logical`) inside the window, the drill recovers to exactly
//!   before that position, and every table must hold the rows the dump counted.
//!
//! The point: `--at`, else the newest such dump's position, else a random point between the
//! base backup's end and the newest WAL. The result is recorded beside the base backup like a
//! verification, with the measured recovery (base download, WAL replay) for estimates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use dr_catalog::wal::plan::Target;
use dr_catalog::wal::Lsn;
use dr_catalog::{BackupDetails, BackupKind, CheckOutcome, DrillFacts, ObjectRole};
use dr_pg::proof::Verdict;

use super::{
    check, row_checks, verdict, write_record, VerifyOptions, VerifyReport, INTEGRITY_CHECK,
};
use crate::repo::{self, BackupEntry, Selector};
use crate::restore::pitr::into_db::{sandbox_bytes, source_database};
use crate::restore::pitr::sandbox::{Recipe, Sandbox};
use crate::restore::pitr::{plan_with, Planned};
use crate::{Context, Error, Kind, Result};

/// What a drill adds to a verification's options.
#[derive(Debug, Clone, Default)]
pub struct Drill {
    /// Recover to this point instead of the one the drill picks.
    pub at: Option<Target>,
    /// `--timeline`: recover onto this timeline instead of the one the plan picks.
    pub timeline: Option<u32>,
    /// How the sandbox's server runs `dr wal fetch`; empty: this binary with the config file
    /// dr read (its environment is the server's).
    pub fetch_argv: Vec<String>,
    /// Where the sandbox's directory is made (`--temp-dir`, else `restore.temp_dir`).
    pub temp_dir: Option<PathBuf>,
}

/// The check a drill fails when the plan cannot reach the point (a gap, a timeline).
const WAL_CHECK: &str = "WAL continuous from the base backup";
/// The check a drill fails when recovery ends before the point.
const REACHED_CHECK: &str = "recovery reached the point";

/// Run a drill of the target's newest base backup (or the one `opts.selector` names).
pub(crate) async fn run(
    ctx: &Context,
    opts: &VerifyOptions,
    drill: &Drill,
) -> Result<VerifyReport> {
    let total = Instant::now();
    let target = crate::wal::fetch::target(ctx, opts.target.as_deref()).await?;
    let entries = repo::list(ctx.store.as_ref(), Some(&target), &ctx.signing).await?;
    let base = pick_base(&entries, opts.selector.as_ref(), &target)?;
    crate::trust::require_trusted(
        &base.trust,
        &base.manifest.id,
        &base.manifest.target,
        &ctx.signing,
        opts.trust_unsigned,
    )?;
    let identities = ctx.identities()?;
    let m = base.manifest.clone();
    let mut run = Run {
        checks: Vec::new(),
        timings: BTreeMap::new(),
        errors: BTreeMap::new(),
        skipped: Vec::new(),
    };
    let only_base = vec![base.clone()];
    // The window of this base: a gap or a timeline it cannot follow fails the drill here,
    // naming the segment.
    let reach = plan_with(
        ctx,
        target.clone(),
        only_base.clone(),
        Target::Latest,
        drill.timeline,
    )
    .await;
    let point = match reach {
        Ok(latest) => {
            run.checks.push(CheckOutcome {
                check: WAL_CHECK.into(),
                passed: true,
                expected: "continuous".into(),
                actual: format!(
                    "continuous to {} ({} segments)",
                    latest.chosen.end,
                    latest.chosen.segments.len()
                ),
            });
            choose_point(ctx, drill, &latest, &entries, &identities).await?
        }
        Err(e) if e.kind == Kind::Interrupted => return Err(e),
        Err(e) => {
            run.failed(WAL_CHECK, "continuous WAL after the base backup", e);
            None
        }
    };
    let mut facts = DrillFacts {
        point: String::new(),
        chosen: String::new(),
        timeline: m.physical.as_ref().map_or(0, |p| p.timeline),
        from: m.finished_at,
        to: None,
        counts_of: None,
        wal_segments: 0,
        wal_bytes: 0,
        skipped: Vec::new(),
    };
    let mut sandbox_said = "local (not started)".to_string();
    if let Some(point) = point {
        facts.point = point.describe();
        facts.chosen = point.why.clone();
        facts.counts_of = point.counts.as_ref().map(|(id, _)| *id);
        match plan_with(ctx, target.clone(), only_base, point.target, drill.timeline).await {
            Ok(planned) => {
                facts.timeline = planned.chosen.timeline;
                facts.wal_segments = planned.chosen.segments.len() as u64;
                facts.wal_bytes = facts.wal_segments * planned.segment_bytes;
                sandbox_said = format!("local, under {}", temp_dir(ctx, drill).display());
                prove(ctx, drill, &planned, &point, &mut run, &mut facts).await?;
            }
            Err(e) if e.kind == Kind::Interrupted => return Err(e),
            Err(e) => run.failed(WAL_CHECK, format!("WAL to {}", facts.point), e),
        }
    }
    facts.skipped = run.skipped.clone();
    run.timings
        .insert("total".into(), total.elapsed().as_secs_f64());
    let record = write_record(
        ctx,
        &m,
        &run.checks,
        run.timings,
        &sandbox_said,
        Some(facts),
    )
    .await?;
    verdict(
        &m,
        VerifyReport {
            record,
            checks: run.checks,
            sandbox: sandbox_said,
        },
        &run.errors,
    )
}

/// The checks of one drill as they are made.
struct Run {
    checks: Vec<CheckOutcome>,
    timings: BTreeMap<String, f64>,
    /// The errors behind checks that failed with one, by check (for the verdict's wording).
    errors: BTreeMap<String, Error>,
    skipped: Vec<String>,
}

impl Run {
    fn failed(&mut self, name: &str, expected: impl Into<String>, e: Error) {
        self.checks.push(CheckOutcome {
            check: name.into(),
            passed: false,
            expected: expected.into(),
            actual: e.to_string(),
        });
        self.errors.insert(name.into(), e);
    }
}

/// The base backup a drill recovers from: the one named, else the newest trusted one.
fn pick_base<'a>(
    entries: &'a [BackupEntry],
    selector: Option<&Selector>,
    target: &str,
) -> Result<&'a BackupEntry> {
    let physical = || {
        entries
            .iter()
            .filter(|e| e.manifest.kind == BackupKind::Physical)
    };
    let found = match selector {
        Some(Selector::Id(id)) => {
            let e = entries
                .iter()
                .find(|e| e.manifest.id == *id)
                .ok_or_else(|| {
                    Error::new(
                        Kind::Failed,
                        format!("no backup {id} of `{target}` in the repository"),
                    )
                    .with_hint(format!(
                        "`dr list --target {target}` shows the base backups"
                    ))
                })?;
            if e.manifest.kind != BackupKind::Physical {
                return Err(Error::config(format!(
                    "backup {id} is a logical dump: a drill recovers a base backup and its WAL"
                ))
                .with_hint(format!(
                    "`dr verify {id}` verifies the dump; `dr verify --pitr --target {target}` drills the newest base backup"
                )));
            }
            Some(e)
        }
        Some(Selector::At(at)) => physical()
            .filter(|e| e.manifest.started_at <= *at)
            .max_by_key(|e| e.manifest.started_at),
        Some(Selector::Latest) | None => physical()
            .filter(|e| e.trust.is_trusted())
            .max_by_key(|e| e.manifest.started_at),
    };
    found.ok_or_else(|| {
        Error::new(
            Kind::Failed,
            format!("`{target}` has no trusted base backup to drill"),
        )
        .with_hint(format!(
            "take one with `dr backup --physical --target {target}`"
        ))
    })
}

/// Where a drill recovers to, and why.
struct Point {
    target: Target,
    /// Stop before the LSN, not after (a dump's snapshot position).
    exclusive: bool,
    why: String,
    /// The dump whose counts the copy must reproduce, and its details.
    counts: Option<(dr_catalog::BackupId, BackupDetails)>,
}

impl Point {
    fn describe(&self) -> String {
        match (self.target, self.exclusive) {
            (Target::Lsn(l), true) => format!("just before LSN {l}"),
            (Target::Lsn(l), false) => format!("LSN {l}"),
            (Target::Time(t), _) => crate::time::format(t),
            (Target::Latest, _) => "the end of the WAL".into(),
        }
    }
}

/// `--at`; else the newest dump of the target whose snapshot position lies in the window
/// (exact counts); else a random point between the base backup's end and the newest WAL.
async fn choose_point(
    ctx: &Context,
    drill: &Drill,
    latest: &Planned,
    entries: &[BackupEntry],
    identities: &dr_stream::Identities,
) -> Result<Option<Point>> {
    if let Some(at) = drill.at {
        return Ok(Some(Point {
            target: at,
            exclusive: false,
            why: "as asked (--at)".into(),
            counts: None,
        }));
    }
    let base = &latest.chosen.base;
    let end = latest.chosen.end;
    let mut dumps: Vec<&BackupEntry> = entries
        .iter()
        .filter(|e| {
            e.manifest.kind == BackupKind::Logical
                && e.trust.is_trusted()
                && e.manifest.started_at >= base.stopped_at
        })
        .collect();
    dumps.sort_by_key(|e| std::cmp::Reverse(e.manifest.started_at));
    // The newest few: each costs a download of its details.
    for e in dumps.into_iter().take(3) {
        let details = crate::restore::fetch_details(ctx, &e.manifest, identities).await?;
        let Some(lsn) = details
            .snapshot_lsn
            .as_deref()
            .and_then(|s| s.parse::<Lsn>().ok())
        else {
            continue;
        };
        if lsn > base.stop && lsn <= end {
            return Ok(Some(Point {
                target: Target::Lsn(lsn),
                exclusive: true,
                why: format!("the snapshot position of dump {}", e.manifest.id),
                counts: Some((e.manifest.id, details)),
            }));
        }
    }
    // Before the newest segment's start: a switched segment ends in padding with no record to
    // stop at, and recovery would end before a point there.
    let last_start = latest.chosen.segments.last().map_or(0, |s| {
        (u64::from(s.log) << 32) + u64::from(s.seg) * latest.segment_bytes
    });
    let span = last_start.saturating_sub(base.stop.0);
    if span < 2 {
        return Ok(Some(Point {
            target: Target::Latest,
            exclusive: false,
            why: "the end of the WAL (the window is one segment)".into(),
            counts: None,
        }));
    }
    let lsn = Lsn(base.stop.0 + fastrand::u64(1..span));
    Ok(Some(Point {
        target: Target::Lsn(lsn),
        exclusive: false,
        why: format!(
            "a random point between the base backup's end ({}) and the newest WAL ({end})",
            base.stop
        ),
        counts: None,
    }))
}

fn temp_dir(ctx: &Context, drill: &Drill) -> PathBuf {
    drill
        .temp_dir
        .clone()
        .or_else(|| ctx.config.restore.temp_dir.clone())
        .unwrap_or_else(std::env::temp_dir)
}

/// How the sandbox's server runs `dr wal fetch`: as given, else as this run's context says
/// (the binary sets it: config and env file), else this binary with dr's config file.
fn fetch_argv(ctx: &Context, drill: &Drill) -> Result<Vec<String>> {
    if !drill.fetch_argv.is_empty() {
        return Ok(drill.fetch_argv.clone());
    }
    if !ctx.fetch_argv.is_empty() {
        return Ok(ctx.fetch_argv.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::config(format!("cannot tell where this dr binary is: {e}")))?;
    let mut argv = vec![exe.display().to_string()];
    if let Some(source) = &ctx.config.source {
        let source = std::path::absolute(source).unwrap_or_else(|_| source.clone());
        argv.push("--config".into());
        argv.push(source.display().to_string());
    }
    Ok(argv)
}

/// The sandbox: unpacked, checked by pg_verifybackup, recovered to the point, counted and
/// checked by pg_amcheck, removed.
async fn prove(
    ctx: &Context,
    drill: &Drill,
    planned: &Planned,
    point: &Point,
    run: &mut Run,
    facts: &mut DrillFacts,
) -> Result<()> {
    let m = &planned.manifest;
    let (database, users) = drill_database(ctx, &planned.target)?;
    let temp_dir = temp_dir(ctx, drill);
    let fetch_argv = fetch_argv(ctx, drill)?;
    let base_raw = m.object(ObjectRole::BaseTar).map_or(0, |o| o.raw_bytes);
    let recipe = Recipe {
        planned,
        temp_dir: &temp_dir,
        fetch_argv: &fetch_argv,
        database: &database,
        users: &users,
        bytes_needed: sandbox_bytes(
            base_raw,
            planned.chosen.segments.len(),
            planned.segment_bytes,
        ),
        exclusive: point.exclusive,
    };
    let unpacked = match Sandbox::unpack(ctx, &recipe).await {
        Ok(u) => u,
        Err(e) if e.kind == Kind::Integrity => {
            run.failed(
                INTEGRITY_CHECK,
                "every object matches the manifest and decrypts",
                e,
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    run.timings.insert("base_fetch".into(), unpacked.seconds);
    let bin = crate::restore::target_pg_bin_dir(&ctx.config, &planned.target).or(ctx
        .config
        .backup
        .pg_bin_dir
        .as_deref());
    let clock = Instant::now();
    match dr_pg::find_tool("pg_verifybackup", m.server_major, bin) {
        Ok(tool) => {
            let verdict = dr_pg::proof::verify_backup(&tool.path, unpacked.path()).await?;
            run.checks.push(tool_check(
                "pg_verifybackup against backup_manifest",
                verdict,
                &mut run.skipped,
            ));
        }
        Err(e) => run.skipped.push(format!("pg_verifybackup: {e}")),
    }
    run.timings
        .insert("pg_verifybackup".into(), clock.elapsed().as_secs_f64());
    let sandbox = match Sandbox::recover_from(ctx, &recipe, unpacked).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind, Kind::Interrupted | Kind::Config) => return Err(e),
        Err(e) => {
            run.failed(REACHED_CHECK, point.describe(), e);
            return Ok(());
        }
    };
    run.timings
        .insert("recover".into(), sandbox.reached.seconds);
    run.checks.push(CheckOutcome {
        check: REACHED_CHECK.into(),
        passed: true,
        expected: point.describe(),
        actual: sandbox.reached.stopped.clone(),
    });
    let clock = Instant::now();
    let proved = in_sandbox(&sandbox, point, m.server_major, bin, run, facts).await;
    run.timings
        .insert("checks".into(), clock.elapsed().as_secs_f64());
    sandbox.remove().await;
    proved
}

/// The checks against the running copy: exact counts, pg_amcheck, the last commit replayed.
async fn in_sandbox(
    sandbox: &Sandbox,
    point: &Point,
    major: u32,
    bin: Option<&std::path::Path>,
    run: &mut Run,
    facts: &mut DrillFacts,
) -> Result<()> {
    let client = match sandbox.conn().connect().await {
        Ok(c) => c,
        Err(e) => {
            run.checks
                .push(check("connect to the recovered copy", "ok", e.to_string()));
            return Ok(());
        }
    };
    // A commit before the base backup ended (one made while it ran) proves nothing past it.
    facts.to = dr_pg::proof::last_replayed_at(&client)
        .await?
        .filter(|t| *t >= facts.from);
    if let Some((_, details)) = &point.counts {
        let counted: BTreeMap<String, i64> = dr_pg::count_tables(&client)
            .await?
            .into_iter()
            .map(|t| (format!("{}.{}", t.schema, t.name), t.rows))
            .collect();
        run.checks.extend(row_checks(details, &counted));
    } else {
        run.skipped.push(
            "exact row counts: no dump of this target recorded its snapshot's WAL position inside the window (wal_level = logical records it)"
                .into(),
        );
    }
    match dr_pg::find_tool("pg_amcheck", major, bin) {
        Ok(tool) => {
            let verdict = dr_pg::proof::amcheck(&tool.path, sandbox.conn()).await?;
            run.checks.push(tool_check(
                "pg_amcheck (heap and B-tree)",
                verdict,
                &mut run.skipped,
            ));
        }
        Err(e) => run.skipped.push(format!("pg_amcheck: {e}")),
    }
    Ok(())
}

/// A tool's verdict as a check; an unavailable tool is a skipped check, not a passed one.
fn tool_check(name: &str, verdict: Verdict, skipped: &mut Vec<String>) -> CheckOutcome {
    match verdict {
        Verdict::Clean => check(name, "clean", "clean"),
        Verdict::Failed(said) => check(name, "clean", said),
        Verdict::Unavailable(said) => {
            skipped.push(format!("{name}: {said}"));
            CheckOutcome {
                check: name.into(),
                passed: true,
                expected: "clean, where the server has it".into(),
                actual: "not available on this server (skipped)".into(),
            }
        }
    }
}

/// The database the drill connects to and the roles to try: the target's database; for a
/// target of every database of a server, its maintenance database (no counts then).
fn drill_database(ctx: &Context, target: &str) -> Result<(String, Vec<String>)> {
    match source_database(ctx, target) {
        Ok(v) => Ok(v),
        Err(_) => Ok(("postgres".into(), vec!["postgres".into()])),
    }
}
