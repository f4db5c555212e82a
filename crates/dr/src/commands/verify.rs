use crate::out;
use std::process::ExitCode;

use dr_core::verify::VerifyOptions;
use dr_core::{Context, Kind, Result};
use dr_observe::report::Reporter;

pub async fn run(
    ctx: &Context,
    reporter: &Reporter,
    opts: &VerifyOptions,
    json: bool,
) -> Result<ExitCode> {
    match reporter.verify(ctx, opts).await {
        Ok(report) => {
            if json {
                crate::commands::print_json(&report)?;
            } else if !crate::logging::quiet() {
                let r = &report.record;
                out!(
                    "verified backup {} of `{}`: {} checks passed in {}",
                    r.backup_id,
                    r.target,
                    r.checks_total,
                    report.sandbox
                );
                if let Some(d) = &r.drill {
                    out!("  recovered to   {} ({})", d.point, d.chosen);
                    out!(
                        "  proven window  {} .. {} on timeline {}",
                        dr_core::time::format(d.from),
                        d.to.map_or_else(
                            || "(no commit after the base backup replayed)".into(),
                            dr_core::time::format
                        ),
                        d.timeline
                    );
                    if let Some(id) = d.counts_of {
                        out!("  exact counts   every table as dump {id} counted it");
                    }
                    if let Some(rate) = d.replay_bytes_per_second(&r.timings) {
                        out!(
                            "  WAL replayed   {} in {} segments, {}/s",
                            dr_core::human_bytes(d.wal_bytes),
                            d.wal_segments,
                            dr_core::human_bytes(rate as u64)
                        );
                    }
                    for s in &d.skipped {
                        out!("  not proven     {s}");
                    }
                }
                for (phase, s) in &r.timings {
                    out!("  {phase:<16} {s:>8.1}s");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind == Kind::VerificationFailed && json => {
            crate::output::print_error(&e);
            Ok(crate::exit::code(e.kind))
        }
        Err(e) => Err(e),
    }
}
