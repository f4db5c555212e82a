use crate::{note, out};
use std::process::ExitCode;

use dr_core::copy::{CopyOptions, CopyReport};
use dr_core::{Context, Result};
use dr_observe::report::Reporter;

/// `dr copy [--to NAME]`: every copy (or one), one after the other; the first failure stops.
pub async fn run(
    ctx: &Context,
    global: &crate::cli::Global,
    reporter: &Reporter,
    to: Option<&str>,
    opts: &CopyOptions,
    json: bool,
) -> Result<ExitCode> {
    let names: Vec<String> = ctx
        .config
        .select_copies(to)?
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut reports: Vec<CopyReport> = Vec::new();
    for name in &names {
        let copy_ctx = crate::commands::context_of(global, ctx.config.for_copy(name)?).await?;
        let report = reporter.copy(ctx, &copy_ctx, name, opts).await?;
        if !json {
            print(&report);
        }
        reports.push(report);
    }
    if json {
        crate::commands::print_json(&reports)?;
    }
    match reports.iter().find_map(dr_core::copy::refused_error) {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn print(r: &CopyReport) {
    for c in &r.copied {
        out!(
            "copied backup {} of `{}` to `{}`: {} objects, {} in {:.1}s",
            c.id,
            c.target,
            r.copy,
            c.objects,
            dr_core::human_bytes(c.bytes),
            c.seconds
        );
    }
    note!(
        "copy `{}`: {} copied, {} already there, {} refused",
        r.copy,
        r.copied.len(),
        r.present,
        r.refused.len()
    );
}
