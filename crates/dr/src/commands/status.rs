use crate::out;
use std::process::ExitCode;

use chrono::Utc;
use dr_core::repo;
use dr_core::{Context, Result};
use serde_json::json;

/// Usable directly as a cron monitor: exit 8 when any target is stale, failed verification,
/// has a damaged backup or a future-dated one (clock skew).
pub async fn run(ctx: &Context, as_json: bool) -> Result<ExitCode> {
    let catalog = repo::catalog(ctx.store.as_ref(), None).await?;
    let now = Utc::now();
    let max_age = chrono::Duration::hours(
        i64::try_from(ctx.config.status.max_backup_age_hours).unwrap_or(26),
    );
    // Next scheduled backup per target, when schedules are configured (none is fine:
    // system cron or a timer may drive dr).
    let jobs = match dr_core::daemon::load_jobs(&ctx.config) {
        Ok(j) => j,
        Err(e) => {
            tracing::debug!("no schedules: {e}");
            Vec::new()
        }
    };
    let mut rows = Vec::new();
    let mut unhealthy = false;
    for t in &ctx.config.targets {
        // Future-dated backups (clock skew) are not "the newest": they would hide a stopped
        // nightly job for as long as the clock was ahead.
        let mine: Vec<&repo::BackupEntry> = catalog
            .current(now)
            .filter(|e| e.manifest.target == t.name)
            .collect();
        let future: Vec<&repo::BackupEntry> = catalog
            .future_dated(now)
            .filter(|e| e.manifest.target == t.name)
            .collect();
        let damaged: Vec<&repo::DamagedBackup> = catalog
            .damaged
            .iter()
            .filter(|d| d.target == t.name)
            .collect();
        let newest = mine.first();
        let verified = mine.iter().find_map(|e| e.verification.as_ref());
        let mut problems = Vec::new();
        match newest {
            None => problems.push("no complete backup".to_string()),
            Some(e) if now - e.manifest.finished_at > max_age => problems.push(format!(
                "newest backup is {}h old (limit {}h)",
                (now - e.manifest.finished_at).num_hours(),
                max_age.num_hours()
            )),
            Some(_) => {}
        }
        if let Some(v) = verified {
            if !v.passed() {
                problems.push(format!("last verification of {} failed", v.backup_id));
            }
        }
        for e in &future {
            problems.push(format!(
                "backup {} is dated {} in the future: clock skew on the host that took it (or this host's clock is behind); `latest` skips it",
                e.manifest.id,
                repo::dated_ahead(&e.manifest.id, now)
            ));
        }
        for d in &damaged {
            problems.push(format!("backup {} is damaged: {}", d.id, d.reason));
        }
        let next_backup = jobs
            .iter()
            .filter(|j| matches!(j.kind, dr_config::JobKind::Backup) && j.targets.contains(&t.name))
            .filter_map(|j| j.schedule.next_after(now).ok())
            .min();
        unhealthy |= !problems.is_empty();
        rows.push(json!({
            "target": t.name,
            "newest_backup": newest.map(|e| e.manifest.id.to_string()),
            "newest_backup_age_seconds": newest.map(|e| (now - e.manifest.finished_at).num_seconds()),
            "last_verification": verified.map(|v| json!({"backup_id": v.backup_id.to_string(), "result": v.result, "verified_at": v.verified_at.to_rfc3339()})),
            "next_backup": next_backup.map(|n| n.to_rfc3339()),
            "future_dated": future.iter().map(|e| e.manifest.id.to_string()).collect::<Vec<_>>(),
            "damaged": damaged.iter().map(|d| json!({"id": d.id.to_string(), "key": d.key, "reason": d.reason})).collect::<Vec<_>>(),
            "ok": problems.is_empty(),
            "problems": problems,
        }));
    }
    if as_json {
        crate::commands::print_json(&rows)?;
    } else {
        for r in &rows {
            let problems: Vec<String> = r["problems"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            out!(
                "{:<4} {:<16} newest {:<18} age {:>8}  verified {:<7} next {}{}",
                if problems.is_empty() { "ok" } else { "FAIL" },
                r["target"].as_str().unwrap_or(""),
                r["newest_backup"].as_str().unwrap_or("none"),
                r["newest_backup_age_seconds"]
                    .as_i64()
                    .map(|s| format!("{}h{:02}m", s / 3600, (s % 3600) / 60))
                    .unwrap_or_else(|| "-".into()),
                r["last_verification"]["result"].as_str().unwrap_or("never"),
                r["next_backup"].as_str().unwrap_or("unscheduled"),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", problems.join("; "))
                }
            );
        }
    }
    Ok(if unhealthy {
        ExitCode::from(crate::exit::STALE)
    } else {
        ExitCode::SUCCESS
    })
}
