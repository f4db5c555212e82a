use crate::out;
use std::process::ExitCode;

use dr_core::status::{self, TargetStatus};
use dr_core::{Context, Result};

/// Usable directly as a cron monitor: exit 8 when any target is stale, failed verification,
/// has a damaged backup or a future-dated one (clock skew).
pub async fn run(ctx: &Context, as_json: bool) -> Result<ExitCode> {
    let rows = status::run(ctx).await?;
    if as_json {
        crate::commands::print_json(&rows)?;
    } else {
        rows.iter().for_each(print_row);
    }
    Ok(if rows.iter().any(|r| !r.ok) {
        ExitCode::from(crate::exit::STALE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_row(r: &TargetStatus) {
    out!(
        "{:<4} {:<16} newest {:<18} age {:>8}  verified {:<7} next {}{}",
        if r.problems.is_empty() { "ok" } else { "FAIL" },
        r.target,
        r.newest_backup.as_deref().unwrap_or("none"),
        r.newest_backup_age_seconds
            .map(|s| format!("{}h{:02}m", s / 3600, (s % 3600) / 60))
            .unwrap_or_else(|| "-".into()),
        r.last_verification
            .as_ref()
            .map_or("never", |v| v.result.as_str()),
        r.next_backup.as_deref().unwrap_or("unscheduled"),
        if r.problems.is_empty() {
            String::new()
        } else {
            format!("  ({})", r.problems.join("; "))
        }
    );
}
