//! `dr wal push`: PostgreSQL's `archive_command`. Nothing on stdout (the server's log gets
//! stderr): one line per archived file, a warning for a file archived before.

use std::path::Path;
use std::process::ExitCode;

use dr_core::{human_bytes, Context, Result};

pub async fn push(ctx: &Context, path: &Path, target: Option<&str>) -> Result<ExitCode> {
    let pushed = dr_core::wal::push::push(ctx, path, target).await?;
    if !pushed.already_archived {
        tracing::info!(
            "archived {} to target {}: {} → {} ({})",
            pushed.file,
            pushed.target,
            human_bytes(pushed.raw_bytes),
            human_bytes(pushed.bytes),
            pushed.record
        );
    }
    Ok(ExitCode::SUCCESS)
}
