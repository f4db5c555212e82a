use crate::out;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use dr_catalog::{BackupDetails, ObjectRole};
use dr_core::repo::{self, BackupEntry, Catalog, DamagedBackup, Selector};
use dr_core::{human_bytes, Context, Result};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Which retention tiers keep each backup (`None` when no retention is configured).
fn tiers(
    ctx: &Context,
    entries: &[BackupEntry],
    now: DateTime<Utc>,
) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let Ok(policy) = dr_core::prune::policy(ctx) else {
        return out;
    };
    let targets: BTreeSet<&str> = entries.iter().map(|e| e.manifest.target.as_str()).collect();
    for t in targets {
        let backups: Vec<(dr_catalog::BackupId, bool)> = entries
            .iter()
            .filter(|e| e.manifest.target == t)
            .map(|e| {
                (
                    e.manifest.id,
                    e.verification.as_ref().is_some_and(|v| v.passed()),
                )
            })
            .collect();
        for d in dr_catalog::retention_plan(&backups, &policy, now) {
            let kept = if d.keep {
                d.tiers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                "prune".to_string()
            };
            out.insert((t.to_string(), d.id.to_string()), kept);
        }
    }
    out
}

/// One row of `dr list`: a complete backup (possibly future-dated) or a damaged one.
enum Row<'a> {
    Complete(&'a BackupEntry),
    Damaged(&'a DamagedBackup),
}

impl Row<'_> {
    fn id(&self) -> dr_catalog::BackupId {
        match self {
            Row::Complete(e) => e.manifest.id,
            Row::Damaged(d) => d.id,
        }
    }
    fn target(&self) -> &str {
        match self {
            Row::Complete(e) => &e.manifest.target,
            Row::Damaged(d) => &d.target,
        }
    }
    /// `ok`, `future_dated` or `damaged` (documented in docs/JSON.md), and why when not ok.
    fn state(&self, now: DateTime<Utc>) -> (&'static str, Option<String>) {
        match self {
            Row::Complete(e) if e.manifest.id.is_future_dated(now) => (
                "future_dated",
                Some(format!(
                    "future-dated: clock skew (dated {} ahead of this host's clock); never picked as latest",
                    repo::dated_ahead(&e.manifest.id, now)
                )),
            ),
            Row::Complete(_) => ("ok", None),
            Row::Damaged(d) => ("damaged", Some(format!("damaged: {}", d.reason))),
        }
    }
}

fn rows(catalog: &Catalog) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = catalog
        .entries
        .iter()
        .map(Row::Complete)
        .chain(catalog.damaged.iter().map(Row::Damaged))
        .collect();
    rows.sort_by(|a, b| b.id().cmp(&a.id()).then_with(|| a.target().cmp(b.target())));
    rows
}

fn row_json(
    row: &Row<'_>,
    tiers: &BTreeMap<(String, String), String>,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let (state, problem) = row.state(now);
    match row {
        Row::Complete(e) => {
            let m = &e.manifest;
            json!({
                "retention": tiers.get(&(m.target.clone(), m.id.to_string())),
                "id": m.id.to_string(),
                "target": m.target,
                "state": state,
                "problem": problem,
                "started_at": m.started_at.to_rfc3339(),
                "finished_at": m.finished_at.to_rfc3339(),
                "bytes": m.stored_bytes(),
                "raw_bytes": m.raw_bytes(),
                "server_version": m.server_version,
                "server_major": m.server_major,
                "verification": e.verification.as_ref().map(|v| json!({
                    "result": v.result,
                    "verified_at": v.verified_at.to_rfc3339(),
                })),
            })
        }
        Row::Damaged(d) => json!({
            "retention": null,
            "id": d.id.to_string(),
            "target": d.target,
            "state": state,
            "problem": problem,
            "key": d.key,
            "reason": d.reason,
            "started_at": null,
            "finished_at": null,
            "bytes": null,
            "raw_bytes": null,
            "server_version": null,
            "server_major": null,
            "verification": null,
        }),
    }
}

pub async fn list(ctx: &Context, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let catalog = repo::catalog(ctx.store.as_ref(), target).await?;
    let now = Utc::now();
    let tiers = tiers(ctx, &catalog.entries, now);
    let rows = rows(&catalog);
    if as_json {
        let v: Vec<_> = rows.iter().map(|r| row_json(r, &tiers, now)).collect();
        crate::commands::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no complete backups in {}", ctx.store.location());
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<18} {:<16} {:<20} {:>10} {:>4}  {:<24} {:<20} NOTE",
        "ID",
        "TARGET",
        "STARTED (UTC)",
        "SIZE",
        "PG",
        "VERIFIED",
        "RETENTION"
    );
    for row in &rows {
        let (_, problem) = row.state(now);
        let note = problem.map(|p| format!("! {p}")).unwrap_or_default();
        match row {
            Row::Complete(e) => {
                let m = &e.manifest;
                let verified = match &e.verification {
                    Some(v) => format!("{} {}", v.result, v.verified_at.format("%Y-%m-%d %H:%M")),
                    None => "never".into(),
                };
                out!(
                    "{:<18} {:<16} {:<20} {:>10} {:>4}  {:<24} {:<20} {note}",
                    m.id.to_string(),
                    m.target,
                    m.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    human_bytes(m.stored_bytes()),
                    m.server_major,
                    verified,
                    tiers
                        .get(&(m.target.clone(), m.id.to_string()))
                        .map(String::as_str)
                        .unwrap_or("-")
                );
            }
            Row::Damaged(d) => out!(
                "{:<18} {:<16} {:<20} {:>10} {:>4}  {:<24} {:<20} {note}",
                d.id.to_string(),
                d.target,
                d.id.time().format("%Y-%m-%d %H:%M:%S").to_string(),
                "-",
                "-",
                "-",
                "kept (damaged)"
            ),
        }
    }
    let damaged = catalog.damaged.len();
    let future = catalog.future_dated(now).count();
    if damaged > 0 {
        tracing::warn!(
            "{damaged} damaged backup(s): `latest` skips them, restoring one by id fails; `dr prune --force` deletes them"
        );
    }
    if future > 0 {
        tracing::warn!(
            "{future} future-dated backup(s): taken with a clock that was ahead; `latest` skips them"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(
    ctx: &Context,
    id: &str,
    target: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    let selector = Selector::parse(Some(id), None)?;
    let entry = repo::resolve(ctx.store.as_ref(), target, &selector).await?;
    let m = &entry.manifest;
    // With the identity, decrypt what the backup holds; without it, say so.
    let details: Option<BackupDetails> = match (
        &ctx.config.encryption.identity_file,
        m.object(ObjectRole::Details),
    ) {
        (Some(_), Some(rec)) => {
            let ids = ctx.identities()?;
            let bytes = ctx.store.get(&rec.key).await?;
            if dr_stream::sha256_hex(&bytes) != rec.sha256 {
                return Err(dr_core::Error::new(
                    dr_core::Kind::Integrity,
                    format!("checksum mismatch for `{}`", rec.key),
                ));
            }
            let plain = dr_stream::unseal(&bytes, &ids, &rec.key)?;
            serde_json::from_slice(&plain).ok()
        }
        _ => None,
    };
    if as_json {
        let mut v = serde_json::to_value(m).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "verification".into(),
                serde_json::to_value(&entry.verification).unwrap_or_default(),
            );
            if let Some(d) = &details {
                obj.insert(
                    "details".into(),
                    serde_json::to_value(d).unwrap_or_default(),
                );
            }
        }
        crate::commands::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("backup      {}", m.id);
    out!("target      {}", m.target);
    out!("started     {}", m.started_at.to_rfc3339());
    out!(
        "finished    {} ({:.1}s)",
        m.finished_at.to_rfc3339(),
        (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0
    );
    out!("server      PostgreSQL {}", m.server_version);
    out!("pg_dump     {}", m.pg_dump_version);
    out!("database    {} on disk", human_bytes(m.database_bytes));
    out!(
        "stored      {} ({} raw, {} + {})",
        human_bytes(m.stored_bytes()),
        human_bytes(m.raw_bytes()),
        m.compression,
        m.encryption
    );
    out!("recipients  {}", m.recipients.join(", "));
    out!("objects");
    for o in &m.objects {
        out!(
            "  {:<8} {:<48} {:>10}  sha256 {}",
            format!("{:?}", o.role).to_lowercase(),
            o.key,
            human_bytes(o.bytes),
            o.sha256
        );
    }
    match &entry.verification {
        Some(v) => out!(
            "verified    {} at {} ({} of {} checks failed)",
            v.result,
            v.verified_at.to_rfc3339(),
            v.checks_failed,
            v.checks_total
        ),
        None => out!("verified    never (run `dr verify {}`)", m.id),
    }
    match details {
        Some(d) => {
            out!(
                "database    {} — {} tables, {} rows, {} sequences, {} large objects",
                d.database,
                d.tables.len(),
                d.total_rows(),
                d.sequences.len(),
                d.large_objects
            );
            if !d.extensions.is_empty() {
                out!("extensions  {}", d.extensions.join(", "));
            }
            for t in &d.tables {
                out!("  {:<50} {:>12}", t.qualified(), t.rows);
            }
        }
        None => out!(
            "details     encrypted (set encryption.identity_file to see tables and row counts)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(ctx: &Context, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let lines = match dr_core::check::run(ctx, target).await {
        Ok(l) => l,
        Err(e) => return Err(e),
    };
    if as_json {
        crate::commands::print_json(&lines)?;
    } else {
        for l in &lines {
            out!(
                "{} {:<28} {}",
                if l.ok { "ok  " } else { "FAIL" },
                l.check,
                l.detail
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
