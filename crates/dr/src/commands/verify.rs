use crate::out;
use std::process::ExitCode;

use dr_core::repo::Selector;
use dr_core::report::Reporter;
use dr_core::verify::VerifyOptions;
use dr_core::{Context, Kind, Result};

#[allow(clippy::too_many_arguments)]
pub async fn run(
    ctx: &Context,
    reporter: &Reporter,
    id: Option<String>,
    target: Option<String>,
    sandbox: Option<dr_core::verify::SandboxChoice>,
    image: Option<String>,
    jobs: Option<u32>,
    json: bool,
) -> Result<ExitCode> {
    let opts = VerifyOptions {
        selector: Some(Selector::parse(id.as_deref(), None)?),
        target,
        sandbox,
        image,
        jobs,
    };
    match reporter.verify(ctx, &opts).await {
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
