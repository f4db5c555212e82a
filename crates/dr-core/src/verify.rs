//! `dr verify`: restore a backup into a throwaway PostgreSQL and prove it — every table's
//! exact row count, sequence values, large objects, operator assertions — then record the
//! result next to the backup. The sandbox is destroyed on every path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use dr_catalog::{keys, CheckOutcome, VerificationRecord};
use dr_pg::ConnInfo;
use dr_sandbox::{SandboxKind, SandboxSpec};

/// Where `dr verify` restores: `auto`, `docker` or `local` (dr-sandbox owns the kinds).
pub use dr_sandbox::SandboxChoice;
use serde::Serialize;

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
    let m = entry.manifest;
    let identities = ctx.identities()?;
    let details = restore::fetch_details(ctx, &m, &identities).await?;
    let kind = pick_kind(ctx, opts).await;
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
    let mut timings = BTreeMap::new();
    let clock = Instant::now();
    let mut sandbox = tokio::select! {
        s = dr_sandbox::start(&spec) => s.map_err(|e| Error::from(e).context(format!("verification of backup {} could not run", m.id)))?,
        _ = ctx.cancel.cancelled() => return Err(Error::interrupted("the verification")),
    };
    timings.insert("sandbox_start".to_string(), clock.elapsed().as_secs_f64());
    let description = sandbox.describe();
    let url = sandbox.url();
    let backup = restore::Backup {
        manifest: &m,
        details: &details,
        identities: &identities,
    };
    let outcome = check_in_sandbox(ctx, &backup, &url, opts, &mut timings).await;
    let clock = Instant::now();
    if let Err(e) = sandbox.destroy().await {
        tracing::error!("could not remove the sandbox ({description}): {e}");
    }
    timings.insert("sandbox_stop".to_string(), clock.elapsed().as_secs_f64());
    let checks = match outcome {
        Ok(c) => c,
        // Could not run (interrupted, a bug of ours): nothing to record.
        Err(e) => return Err(e),
    };
    timings.insert("total".to_string(), total.elapsed().as_secs_f64());
    let failed: Vec<&CheckOutcome> = checks.iter().filter(|c| !c.passed).collect();
    let record = VerificationRecord {
        format: 1,
        backup_id: m.id,
        target: m.target.clone(),
        verified_at: Utc::now(),
        result: if failed.is_empty() {
            "passed"
        } else {
            "failed"
        }
        .into(),
        checks_total: u32::try_from(checks.len()).unwrap_or(u32::MAX),
        checks_failed: u32::try_from(failed.len()).unwrap_or(u32::MAX),
        timings,
        sandbox: description.clone(),
        dr_version: DR_VERSION.into(),
        summary: (!failed.is_empty())
            .then(|| format!("{} of {} checks failed", failed.len(), checks.len())),
    };
    // Record: the plain summary and the encrypted per-check outcomes (they name tables).
    let at = record.verified_at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let recipients = ctx.recipients()?;
    let sealed = dr_stream::seal(
        &serde_json::to_vec(&checks).unwrap_or_default(),
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
    let report = VerifyReport {
        record,
        checks,
        sandbox: description,
    };
    if let Some(damage) = report
        .checks
        .iter()
        .find(|c| !c.passed && c.check == INTEGRITY_CHECK)
    {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "verification of backup {} of `{}`: the backup is DAMAGED (recorded as a failed verification): {}\nhint: keep older backups (do not prune), restore from an older one if needed, and find out what changed the repository",
                m.id, m.target, damage.actual
            ),
        ));
    }
    if !report.record.passed() {
        let lines: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("  {}: expected {}, got {}", c.check, c.expected, c.actual))
            .collect();
        return Err(Error::new(
            Kind::VerificationFailed,
            format!(
                "verification of backup {} of `{}` FAILED ({} of {} checks):\n{}\nhint: this backup does not restore faithfully; keep older backups (do not prune) and investigate",
                m.id,
                m.target,
                report.record.checks_failed,
                report.record.checks_total,
                lines.join("\n")
            ),
        ));
    }
    Ok(report)
}

/// The check that fails when stored objects do not match the manifest or do not decrypt.
const INTEGRITY_CHECK: &str = "backup integrity";

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
) -> Result<Vec<CheckOutcome>> {
    let details = backup.details;
    let db = if details.database.is_empty() {
        "verify"
    } else {
        details.database.as_str()
    };
    let conn = ConnInfo::parse(sandbox_url)?.with_dbname(db);
    let ropts = RestoreOptions {
        jobs: opts.jobs,
        with_globals: true,
        // A throwaway server: the backup's roles are created as they were, powers and all.
        allow_any_role: true,
        ..RestoreOptions::default()
    };
    let mut checks = Vec::new();
    let clock = Instant::now();
    // The restore already counted every table after pg_restore; reuse those counts.
    let mut counted: Option<BTreeMap<String, i64>> = None;
    match restore::run_into(ctx, backup, &conn, &ropts).await {
        Ok(report) => {
            for (k, v) in report.seconds {
                timings.insert(k, v);
            }
            counted = Some(
                report
                    .tables
                    .iter()
                    .map(|(k, (_, a))| (k.clone(), *a))
                    .collect(),
            );
            checks.push(check(
                "pg_restore finished without errors",
                "no errors",
                "no errors",
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
            timings.insert("restore".into(), clock.elapsed().as_secs_f64());
        }
        Err(e) if e.kind == Kind::Failed => {
            checks.push(CheckOutcome {
                check: "restore".into(),
                passed: false,
                expected: "a clean restore".into(),
                actual: e.to_string(),
            });
            timings.insert("restore".into(), clock.elapsed().as_secs_f64());
        }
        Err(e) => return Err(e),
    }
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
    for t in &details.tables {
        let got = actual
            .get(&t.qualified())
            .map(ToString::to_string)
            .unwrap_or_else(|| "missing table".into());
        checks.push(check(format!("rows of {}", t.qualified()), t.rows, got));
    }
    // Sequences live outside MVCC: the value recorded at backup time and the one pg_dump
    // wrote may differ on a busy database. What must hold after a restore: every sequence
    // exists, and none is behind the column it feeds (or the next insert collides).
    for s in &details.sequences {
        let sql = format!(
            "select last_value, is_called from {}.{}",
            dr_pg::quote_ident(&s.schema),
            dr_pg::quote_ident(&s.name)
        );
        let (passed, actual) = match client.query_one(&sql, &[]).await {
            Ok(r) => (
                true,
                format!("{} called={}", r.get::<_, i64>(0), r.get::<_, bool>(1)),
            ),
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
    let owned = client
        .query(
            "select format('%I.%I', sn.nspname, s.relname), format('%I.%I', tn.nspname, t.relname), quote_ident(a.attname)
             from pg_class s
             join pg_namespace sn on sn.oid = s.relnamespace
             join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass
                  and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
             join pg_class t on t.oid = d.refobjid
             join pg_namespace tn on tn.oid = t.relnamespace
             join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
             where s.relkind = 'S' and t.relkind in ('r', 'p')",
            &[],
        )
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing owned sequences: {e}")))?;
    for row in owned {
        let (seq, table, column): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let sql = format!(
            "select (select case when is_called then last_value else last_value - 1 end from {seq})::numeric >= coalesce((select max({column})::numeric from {table}), 0)"
        );
        let ok = match client.query_one(&sql, &[]).await {
            Ok(r) => r
                .try_get::<_, bool>(0)
                .map(|b| b.to_string())
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => format!("error: {e}"),
        };
        checks.push(check(
            format!("sequence {seq} not behind {table}.{column}"),
            true,
            ok,
        ));
    }
    let los: i64 = client
        .query_one("select count(*) from pg_largeobject_metadata", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    checks.push(check("large objects", details.large_objects, los));
    for a in &ctx.config.verify.assert {
        let got = match client.query_one(&a.sql, &[]).await {
            Ok(r) => match r.try_get::<_, bool>(0) {
                Ok(b) => b.to_string(),
                Err(e) => format!("not a boolean: {e}"),
            },
            Err(e) => format!("error: {e}"),
        };
        checks.push(check(format!("assert {}", a.name), true, got));
    }
    timings.insert("checks".into(), clock.elapsed().as_secs_f64());
    Ok(checks)
}
