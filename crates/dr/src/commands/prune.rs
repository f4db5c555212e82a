use crate::out;
use std::process::ExitCode;

use dr_core::{Context, Result};
use dr_observe::report::Reporter;

pub async fn run(
    ctx: &Context,
    reporter: &Reporter,
    target: Option<&str>,
    dry_run: bool,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    let code = report(ctx, reporter, target, dry_run, force, json).await?;
    // A signal stops prune, even one that came when nothing was left to delete: the exit
    // code says it was stopped, as the documentation promises.
    if ctx.cancel.is_cancelled() {
        return Err(dr_core::Error::new(
            dr_core::Kind::Interrupted,
            "prune was interrupted by a signal; what it reported as deleted is deleted, the rest is kept",
        ));
    }
    Ok(code)
}

/// Prune (or plan it) and print what was kept and deleted.
async fn report(
    ctx: &Context,
    reporter: &Reporter,
    target: Option<&str>,
    dry_run: bool,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    let now = chrono::Utc::now();
    let reports = if dry_run {
        dr_core::prune::run(ctx, target, dry_run, force, now).await?
    } else {
        reporter.prune(ctx, target, force, now).await?
    };
    if json {
        crate::commands::print_json(&reports)?;
        return Ok(ExitCode::SUCCESS);
    }
    // -q: what was kept and deleted is in the logs at info; cron mails only failures.
    if crate::logging::quiet() && !dry_run {
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
            let note = if d.tiers.contains(&dr_catalog::Tier::Future) {
                "\tfuture-dated: clock skew on the host that took it; not counted as the newest"
            } else {
                ""
            };
            // Object Lock: dropped by the policy, kept until its lock expires.
            if let Some(l) = r.locked.iter().find(|l| l.id == d.id && l.what == "backup") {
                out!(
                    "{}\t{}\tkeep\tlocked until {}: the policy drops it; a later prune removes it",
                    r.target,
                    d.id,
                    l.until.to_rfc3339()
                );
                continue;
            }
            out!("{}\t{}\t{verb}\t{why}{note}", r.target, d.id);
        }
        for d in &r.damaged {
            let verb = match (d.keep, dry_run) {
                (true, _) => "keep",
                (false, true) => "would delete",
                (false, false) => "deleted",
            };
            let note = if d.keep { " (--force deletes it)" } else { "" };
            out!(
                "{}\t{}\t{verb}\tdamaged: {}{note}",
                r.target,
                d.id,
                d.reason
            );
        }
        for l in r.locked.iter().filter(|l| l.what != "backup") {
            out!(
                "{}\t{}\tkeep\t{} locked until {}: a later prune removes it",
                r.target,
                l.id,
                l.what,
                l.until.to_rfc3339()
            );
        }
        for l in &r.lock_extended {
            out!(
                "{}\t{}\tlock extended to {} ({} object versions)",
                r.target,
                l.id,
                l.until.to_rfc3339(),
                l.versions
            );
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
        if let Some(w) = &r.wal {
            print_wal(&r.target, w, dry_run);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The WAL lines: `wal app tl1 A..B 13 segments 49.6 MiB\twould delete`, then what else
/// goes and what is kept.
fn print_wal(target: &str, w: &dr_core::prune::WalPruneReport, dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleted" };
    if w.bases.is_empty() {
        out!("wal {target}\tkeep\tno retained physical base backup: the WAL archive is kept whole");
        return;
    }
    for range in &w.ranges {
        out!("{}\t{verb}", range.text);
    }
    if w.superseded + w.orphans > 0 {
        out!(
            "wal {target}\t{verb}\t{} superseded partial segments, {} data objects without a record",
            w.superseded,
            w.orphans
        );
    }
    if let Some(until) = w.locked.iter().map(|l| l.until).max() {
        out!(
            "wal {target}\tkeep\t{} objects locked until {} at the latest: a later prune removes them",
            w.locked.len(),
            until.to_rfc3339()
        );
    }
    if !w.unreadable.is_empty() {
        out!(
            "wal {target}\tkeep\t{} data objects whose record cannot be read or trusted",
            w.unreadable.len()
        );
    }
    for t in &w.unknown_timelines {
        out!("wal {target}\tkeep\ttimeline {t}: its history record is missing");
    }
}
