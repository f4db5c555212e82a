use crate::out;
use std::process::ExitCode;

use dr_core::notify::Reporter;
use dr_core::{Context, Result};

pub async fn run(
    ctx: &Context,
    reporter: &Reporter,
    target: Option<&str>,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    let now = chrono::Utc::now();
    let reports = if dry_run {
        dr_core::prune::run(ctx, target, dry_run, now).await?
    } else {
        reporter.prune(ctx, target, now).await?
    };
    if json {
        crate::commands::print_json(&reports)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        for d in &r.decisions {
            let why = d
                .tiers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let verb = match (d.keep, dry_run) {
                (true, _) => "keep",
                (false, true) => "would delete",
                (false, false) => "deleted",
            };
            out!("{}\t{}\t{verb}\t{why}", r.target, d.id);
        }
        for k in &r.leftovers {
            out!(
                "{}\t{k}\t{} leftover of a failed backup",
                r.target,
                if dry_run { "would delete" } else { "deleted" }
            );
        }
        for k in &r.stale_uploads {
            out!(
                "{}\t{k}\t{} stale multipart upload",
                r.target,
                if dry_run { "would abort" } else { "aborted" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
