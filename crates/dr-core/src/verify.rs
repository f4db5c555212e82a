//! `dr verify`: restore a backup into a throwaway PostgreSQL and prove it — every table's
//! exact row count, sequence values, large objects, operator assertions — then record the
//! result next to the backup. The sandbox is destroyed on every path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use dr_catalog::{keys, CheckOutcome, Manifest, VerificationRecord};
use dr_pg::ConnInfo;
use dr_sandbox::{SandboxKind, SandboxSpec};

/// Where `dr verify` restores: `auto`, `docker` or `local` (dr-sandbox owns the kinds).
pub use dr_sandbox::SandboxChoice;
use serde::Serialize;

mod drill;

pub use drill::Drill;

use crate::repo::{self, Selector};
use crate::restore::{self, RestoreOptions};
use crate::{Context, Error, Kind, Result, DR_VERSION};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub selector: Option<Selector>,
    pub target: Option<String>,
    /// Overrides `verify.sandbox`.
    pub sandbox: Option<SandboxChoice>,
    pub image: Option<String>,
    pub jobs: Option<u32>,
    /// Verify an unsigned backup (made before signing existed); see [`crate::trust`].
    pub trust_unsigned: bool,
    /// `--pitr`: a drill of a base backup and its WAL instead (see [`drill`]).
    pub pitr: Option<Drill>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub record: VerificationRecord,
    pub checks: Vec<CheckOutcome>,
    pub sandbox: String,
}

/// `--sandbox`, else `verify.sandbox`, else `auto`; both were parsed (and checked) already.
async fn pick_kind(ctx: &Context, opts: &VerifyOptions) -> SandboxKind {
    opts.sandbox
        .or(ctx.config.verify.sandbox)
        .unwrap_or_default()
        .resolve()
        .await
}

/// Verify one backup. `Ok` means it ran: look at `record.passed()`. A failed verification is
/// recorded and returned as `Err` of kind `VerificationFailed`.
pub async fn run(ctx: &Context, opts: &VerifyOptions) -> Result<VerifyReport> {
    if let Some(picked) = rotated(ctx, opts).await? {
        return Box::pin(run(ctx, &picked)).await;
    }
    if let Some(d) = &opts.pitr {
        return drill::run(ctx, opts, d).await;
    }
    let total = Instant::now();
    let selector = opts.selector.clone().unwrap_or(Selector::Latest);
    let entry = repo::resolve(
        ctx.store.as_ref(),
        opts.target.as_deref(),
        &selector,
        &ctx.signing,
    )
    .await?;
    // Origin before anything else: an untrusted backup never reaches a sandbox.
    crate::trust::require_trusted(
        &entry.trust,
        &entry.manifest.id,
        &entry.manifest.target,
        &ctx.signing,
        opts.trust_unsigned,
    )?;
    crate::backup::physical::require_logical(
        &entry.manifest,
        "verification (a restore into a sandbox)",
    )?;
    let m = entry.manifest;
    let identities = ctx.identities()?;
    let details = restore::fetch_details(ctx, &m, &identities).await?;
    let kind = pick_kind(ctx, opts).await;
    let mut timings = BTreeMap::new();
    let clock = Instant::now();
    let mut sandbox = start_sandbox(ctx, opts, &m, kind).await?;
    timings.insert("sandbox_start".to_string(), clock.elapsed().as_secs_f64());
    let description = sandbox.describe();
    let url = sandbox.url();
    let backup = restore::Backup {
        manifest: &m,
        details: &details,
        identities: &identities,
    };
    // The errors behind checks that failed with one (the restore's), by check.
    let mut errors = BTreeMap::new();
    let outcome = check_in_sandbox(ctx, &backup, &url, opts, &mut timings, &mut errors).await;
    let clock = Instant::now();
    if let Err(e) = sandbox.destroy().await {
        tracing::error!("could not remove the sandbox ({description}): {e}");
    }
    timings.insert("sandbox_stop".to_string(), clock.elapsed().as_secs_f64());
    // Could not run (interrupted, a bug of ours): nothing to record.
    let checks = outcome?;
    timings.insert("total".to_string(), total.elapsed().as_secs_f64());
    let record = write_record(ctx, &m, &checks, timings, &description, None).await?;
    verdict(
        &m,
        VerifyReport {
            record,
            checks,
            sandbox: description,
        },
        &errors,
    )
}

/// `[verify] prove_within` and no backup named: the retained backup of the target whose last
/// proof is oldest (see [`crate::proof`]) — a base backup is drilled. None: as asked.
async fn rotated(ctx: &Context, opts: &VerifyOptions) -> Result<Option<VerifyOptions>> {
    let Some(within) = ctx.config.verify.prove_within else {
        return Ok(None);
    };
    if opts.selector.is_some() || opts.pitr.is_some() {
        return Ok(None);
    }
    let target = match (&opts.target, ctx.config.targets.as_slice()) {
        (Some(t), _) => t.clone(),
        (None, [only]) => only.name.clone(),
        _ => return Ok(None),
    };
    let entries = repo::list(ctx.store.as_ref(), Some(&target), &ctx.signing).await?;
    let retained = crate::proof::retained(&entries, &target, Utc::now());
    let Some(next) = crate::proof::pick(&retained) else {
        return Ok(None);
    };
    let drilled = next.manifest.kind == dr_catalog::BackupKind::Physical;
    tracing::info!(
        "verify.prove_within = {within}: proving {} {} of `{target}`, the one whose last proof is oldest{}",
        if drilled { "base backup" } else { "backup" },
        next.manifest.id,
        match &next.verification {
            Some(v) => format!(" ({} {})", v.result, crate::time::format(v.verified_at)),
            None => " (never proven)".into(),
        }
    );
    let mut picked = opts.clone();
    picked.selector = Some(Selector::Id(next.manifest.id));
    picked.target = Some(next.manifest.target.clone());
    if drilled {
        picked.pitr = Some(Drill::default());
    }
    Ok(Some(picked))
}

/// The throwaway PostgreSQL of the backup's major: `--sandbox`/`verify.sandbox`, the image
/// or binaries configured.
async fn start_sandbox(
    ctx: &Context,
    opts: &VerifyOptions,
    m: &Manifest,
    kind: SandboxKind,
) -> Result<Box<dyn dr_sandbox::Sandbox>> {
    let spec = SandboxSpec {
        kind,
        major: m.server_major,
        image: opts
            .image
            .clone()
            .or_else(|| ctx.config.verify.image.clone()),
        pg_bin_dir: sandbox_bin_dir(&ctx.config, &m.target),
        ready_timeout: Duration::from_secs(ctx.config.verify.ready_timeout_secs.unwrap_or(120)),
    };
    tokio::select! {
        s = dr_sandbox::start(&spec) => s.map_err(|e| Error::from(e).context(format!("verification of backup {} could not run", m.id))),
        _ = ctx.cancel.cancelled() => Err(Error::interrupted("the verification")),
    }
}

/// Record the verification next to the backup: the plain summary (signed like the manifest)
/// and the encrypted per-check outcomes (they name tables).
async fn write_record(
    ctx: &Context,
    m: &Manifest,
    checks: &[CheckOutcome],
    timings: BTreeMap<String, f64>,
    description: &str,
    drill: Option<dr_catalog::DrillFacts>,
) -> Result<VerificationRecord> {
    let failed = checks.iter().filter(|c| !c.passed).count();
    let record = VerificationRecord {
        format: 1,
        backup_id: m.id,
        target: m.target.clone(),
        verified_at: Utc::now(),
        result: if failed == 0 { "passed" } else { "failed" }.into(),
        checks_total: u32::try_from(checks.len()).unwrap_or(u32::MAX),
        checks_failed: u32::try_from(failed).unwrap_or(u32::MAX),
        timings,
        sandbox: description.to_string(),
        dr_version: DR_VERSION.into(),
        summary: (failed > 0).then(|| format!("{} of {} checks failed", failed, checks.len())),
        drill,
    };
    let at = record.verified_at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let recipients = ctx.recipients()?;
    let sealed = dr_stream::seal(
        &serde_json::to_vec(checks).unwrap_or_default(),
        &recipients,
        ctx.config.backup.zstd_level,
    )?;
    ctx.store
        .put(
            &keys::verification_details(&m.target, &m.id, &at),
            Bytes::from(sealed),
        )
        .await?;
    // Signed like the manifest: an unsigned record counts nowhere.
    if !ctx.signing.can_sign() {
        tracing::warn!(
            "this verification record of backup {} is UNSIGNED (no signing.key_file on this host): no host will count it as a verification\nhint: give the verify host a signing key (`dr keygen --signing --output FILE`, then [signing] key_file) and trust its public key where you run `dr status`",
            m.id
        );
    }
    crate::trust::put_signed(
        ctx.store.as_ref(),
        &ctx.signing,
        &keys::verification(&m.target, &m.id, &at),
        serde_json::to_vec_pretty(&record).unwrap_or_default(),
    )
    .await?;
    Ok(record)
}

/// The report of a verification that passed; a damaged backup (exit 4) or a failed
/// verification (exit 5) as an error listing the failed checks. A check that failed with an
/// error (`errors`, by check: the restore's) is said as the error, its hint joining the
/// verification's.
fn verdict(
    m: &Manifest,
    report: VerifyReport,
    errors: &BTreeMap<String, Error>,
) -> Result<VerifyReport> {
    let said = |c: &CheckOutcome| match errors.get(&c.check) {
        Some(e) => Error {
            hint: None,
            ..e.clone()
        }
        .to_string(),
        None => c.actual.clone(),
    };
    let with_hints = |e: Error, failed: &[&CheckOutcome], last: &str| {
        failed
            .iter()
            .filter_map(|c| errors.get(&c.check)?.hint.as_deref())
            .fold(e, Error::with_hint)
            .with_hint(last)
    };
    if let Some(damage) = report
        .checks
        .iter()
        .find(|c| !c.passed && c.check == INTEGRITY_CHECK)
    {
        return Err(with_hints(
            Error::new(
                Kind::Integrity,
                format!(
                    "verification of backup {} of `{}`: the backup is DAMAGED (recorded as a failed verification): {}",
                    m.id,
                    m.target,
                    said(damage)
                ),
            ),
            &[damage],
            "keep older backups (do not prune), restore from an older one if needed, and find out what changed the repository",
        ));
    }
    if !report.record.passed() {
        let failed: Vec<&CheckOutcome> = report.checks.iter().filter(|c| !c.passed).collect();
        let lines: Vec<String> = failed
            .iter()
            .map(|c| format!("  {}: expected {}, got {}", c.check, c.expected, said(c)))
            .collect();
        return Err(with_hints(
            Error::new(
                Kind::VerificationFailed,
                format!(
                    "verification of backup {} of `{}` FAILED ({} of {} checks):\n{}",
                    m.id,
                    m.target,
                    report.record.checks_failed,
                    report.record.checks_total,
                    lines.join("\n")
                ),
            ),
            &failed,
            "this backup does not restore faithfully; keep older backups (do not prune) and investigate",
        ));
    }
    Ok(report)
}

/// The check that fails when stored objects do not match the manifest or do not decrypt.
const INTEGRITY_CHECK: &str = "backup integrity";
/// The check a restore that failed (not for damage) fails.
const RESTORE_CHECK: &str = "restore";

/// Where the local sandbox looks first for `initdb`/`pg_ctl`/`postgres`: `verify.pg_bin_dir`;
/// else the backup's target's `pg_bin_dir` (where its `pg_dump` came from) when it holds the
/// server binaries too; else `backup.pg_bin_dir`. The default directories and `PATH` follow.
fn sandbox_bin_dir(config: &dr_config::Config, target: &str) -> Option<std::path::PathBuf> {
    if let Some(d) = &config.verify.pg_bin_dir {
        return Some(d.clone());
    }
    restore::target_pg_bin_dir(config, target)
        .filter(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .map(std::path::Path::to_path_buf)
        .or_else(|| config.backup.pg_bin_dir.clone())
}

/// One check per table the backup counted: `actual` (by `schema.name`) holds exactly as many
/// rows.
fn row_checks(
    details: &dr_catalog::BackupDetails,
    actual: &BTreeMap<String, i64>,
) -> Vec<CheckOutcome> {
    details
        .tables
        .iter()
        .map(|t| {
            let got = actual
                .get(&t.qualified())
                .map(ToString::to_string)
                .unwrap_or_else(|| "missing table".into());
            check(format!("rows of {}", t.qualified()), t.rows, got)
        })
        .collect()
}

fn check(name: impl Into<String>, expected: impl ToString, actual: impl ToString) -> CheckOutcome {
    let (e, a) = (expected.to_string(), actual.to_string());
    CheckOutcome {
        check: name.into(),
        passed: e == a,
        expected: e,
        actual: a,
    }
}

async fn check_in_sandbox(
    ctx: &Context,
    backup: &restore::Backup<'_>,
    sandbox_url: &str,
    opts: &VerifyOptions,
    timings: &mut BTreeMap<String, f64>,
    errors: &mut BTreeMap<String, Error>,
) -> Result<Vec<CheckOutcome>> {
    let details = backup.details;
    let db = if details.database.is_empty() {
        "verify"
    } else {
        details.database.as_str()
    };
    let conn = ConnInfo::parse(sandbox_url)?.with_dbname(db);
    let mut checks = Vec::new();
    let counted = restore_checked(ctx, backup, &conn, opts, timings, &mut checks, errors).await?;
    let clock = Instant::now();
    let client = match conn.connect().await {
        Ok(c) => c,
        Err(e) => {
            checks.push(check(
                "connect to the restored database",
                "ok",
                e.to_string(),
            ));
            return Ok(checks);
        }
    };
    let actual: BTreeMap<String, i64> = match counted {
        Some(c) => c,
        None => dr_pg::count_tables(&client)
            .await?
            .into_iter()
            .map(|t| (format!("{}.{}", t.schema, t.name), t.rows))
            .collect(),
    };
    checks.extend(row_checks(details, &actual));
    sequence_checks(&client, details, &mut checks).await?;
    let los = dr_pg::checks::large_object_count(&client)
        .await
        .unwrap_or(-1);
    checks.push(check("large objects", details.large_objects, los));
    for a in &ctx.config.verify.assert {
        let got = match dr_pg::checks::assertion(&client, &a.sql).await {
            Ok(dr_pg::checks::Answer::Boolean(b)) => b.to_string(),
            Ok(dr_pg::checks::Answer::NotBoolean(why)) => format!("not a boolean: {why}"),
            Err(e) => format!("error: {e}"),
        };
        checks.push(check(format!("assert {}", a.name), true, got));
    }
    timings.insert("checks".into(), clock.elapsed().as_secs_f64());
    Ok(checks)
}

/// Restore the backup into the sandbox's database `conn` (its roles too, powers and all: a
/// throwaway server) and record how that went as the first check. Returns the row counts
/// the restore took after pg_restore (none when it failed), for the checks to reuse.
async fn restore_checked(
    ctx: &Context,
    backup: &restore::Backup<'_>,
    conn: &ConnInfo,
    opts: &VerifyOptions,
    timings: &mut BTreeMap<String, f64>,
    checks: &mut Vec<CheckOutcome>,
    errors: &mut BTreeMap<String, Error>,
) -> Result<Option<BTreeMap<String, i64>>> {
    let ropts = RestoreOptions {
        jobs: opts.jobs,
        with_globals: true,
        // A throwaway server: the backup's roles are created as they were, powers and all.
        allow_any_role: true,
        ..RestoreOptions::default()
    };
    let clock = Instant::now();
    match restore::run_into(ctx, backup, conn, &ropts).await {
        Ok(report) => {
            for (k, v) in report.seconds {
                timings.insert(k, v);
            }
            checks.push(check(
                "pg_restore finished without errors",
                "no errors",
                "no errors",
            ));
            // The restore already counted every table after pg_restore; reuse those counts.
            return Ok(Some(
                report
                    .tables
                    .iter()
                    .map(|(k, (_, a))| (k.clone(), *a))
                    .collect(),
            ));
        }
        // Damaged stored data: a finding about the backup, recorded, and reported as such
        // (exit 4), not as "restored but wrong".
        Err(e) if e.kind == Kind::Integrity => {
            checks.push(CheckOutcome {
                check: INTEGRITY_CHECK.into(),
                passed: false,
                expected: "every object matches the manifest and decrypts".into(),
                actual: e.to_string(),
            });
            errors.insert(INTEGRITY_CHECK.into(), e);
        }
        Err(e) if e.kind == Kind::Failed => {
            checks.push(CheckOutcome {
                check: RESTORE_CHECK.into(),
                passed: false,
                expected: "a clean restore".into(),
                actual: e.to_string(),
            });
            errors.insert(RESTORE_CHECK.into(), e);
        }
        Err(e) => return Err(e),
    }
    timings.insert("restore".into(), clock.elapsed().as_secs_f64());
    Ok(None)
}

/// Sequences live outside MVCC: the value recorded at backup time and the one pg_dump
/// wrote may differ on a busy database. What must hold after a restore: every sequence
/// exists, and none is behind the column it feeds (or the next insert collides).
async fn sequence_checks(
    client: &dr_pg::Client,
    details: &dr_catalog::BackupDetails,
    checks: &mut Vec<CheckOutcome>,
) -> Result<()> {
    for s in &details.sequences {
        let (passed, actual) = match dr_pg::checks::sequence_state(client, &s.schema, &s.name).await
        {
            Ok((last_value, is_called)) => (true, format!("{last_value} called={is_called}")),
            Err(e) => (false, format!("error: {e}")),
        };
        checks.push(CheckOutcome {
            check: format!("sequence {}.{} restored", s.schema, s.name),
            passed,
            expected: format!(
                "present (at backup time: {} called={})",
                s.last_value, s.is_called
            ),
            actual,
        });
    }
    for s in dr_pg::checks::owned_sequences(client).await? {
        let ok = match dr_pg::checks::sequence_not_behind(client, &s).await {
            Ok(b) => b.to_string(),
            Err(e) => format!("error: {e}"),
        };
        checks.push(check(
            format!(
                "sequence {} not behind {}.{}",
                s.sequence, s.table, s.column
            ),
            true,
            ok,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, now};

    fn report(checks: Vec<CheckOutcome>) -> VerifyReport {
        let failed = checks.iter().filter(|c| !c.passed).count();
        VerifyReport {
            record: VerificationRecord {
                format: 1,
                backup_id: "20261122T030000Z".parse().expect("id"),
                target: "app".into(),
                verified_at: now(),
                result: if failed > 0 { "failed" } else { "passed" }.into(),
                checks_total: u32::try_from(checks.len()).unwrap_or(0),
                checks_failed: u32::try_from(failed).unwrap_or(0),
                timings: BTreeMap::new(),
                sandbox: "local".into(),
                dr_version: "x".into(),
                summary: None,
                drill: None,
            },
            checks,
            sandbox: "local".into(),
        }
    }

    /// A check that failed with an error is said as the error, its hint joining the
    /// verification's on the one `hint:` line; the recorded check keeps the whole error.
    #[test]
    fn a_failed_restore_is_said_once_with_its_hint_first() {
        let m = entry("app", "20261122T030000Z").manifest;
        let e = Error::new(Kind::Failed, "pg_restore failed\n  error: x").with_hint("fix x");
        let restore = CheckOutcome {
            check: RESTORE_CHECK.into(),
            passed: false,
            expected: "a clean restore".into(),
            actual: e.to_string(),
        };
        let rows = check("rows of public.t", 3, 3);
        let errors = BTreeMap::from([(RESTORE_CHECK.to_string(), e)]);
        let got = verdict(&m, report(vec![restore, rows]), &errors).expect_err("failed");
        assert_eq!(got.kind, Kind::VerificationFailed);
        assert_eq!(
            got.to_string(),
            "verification of backup 20261122T030000Z of `app` FAILED (1 of 2 checks):\n  restore: expected a clean restore, got pg_restore failed\n  error: x\nhint: fix x; this backup does not restore faithfully; keep older backups (do not prune) and investigate"
        );

        let damage =
            Error::new(Kind::Integrity, "`k` is corrupt").with_hint("restore an older one");
        let integrity = CheckOutcome {
            check: INTEGRITY_CHECK.into(),
            passed: false,
            expected: "every object matches the manifest and decrypts".into(),
            actual: damage.to_string(),
        };
        let errors = BTreeMap::from([(INTEGRITY_CHECK.to_string(), damage)]);
        let got = verdict(&m, report(vec![integrity]), &errors).expect_err("damaged");
        assert_eq!(got.kind, Kind::Integrity);
        assert_eq!(got.details, Vec::<String>::new());
        assert_eq!(
            got.hint.as_deref(),
            Some("restore an older one; keep older backups (do not prune), restore from an older one if needed, and find out what changed the repository")
        );
    }
}
