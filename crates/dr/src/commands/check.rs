//! `dr check`: every line, passed or failed.

use crate::out;
use std::process::ExitCode;

use dr_core::{Context, Result};

pub async fn run(ctx: &Context, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
    // Every line, passed or failed, then the failed ones once more as the error (exit 3).
    let lines = dr_core::check::run(ctx, target).await?;
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
    match dr_core::check::failure(&lines) {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
