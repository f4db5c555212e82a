//! `dr wal push`: PostgreSQL's `archive_command`. Nothing on stdout (the server's log gets
//! stderr): one line per archived file, a warning for a file archived before.
//!
//! `dr wal stream`: runs until SIGTERM/SIGINT; the log says what went up, and the last line
//! what it did in all.

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

pub async fn stream(ctx: &Context, target: Option<&str>) -> Result<ExitCode> {
    let target = dr_core::wal::stream::target(ctx, target)?;
    let done = dr_core::wal::stream::run(ctx, target, &ctx.cancel).await?;
    tracing::info!(
        "stopped streaming `{}`: {} segments and {} partial uploads, WAL up to {} stored, pg_receivewal restarted {} times",
        done.target,
        done.segments,
        done.partials,
        done.uploaded.map_or_else(|| "nothing new".to_string(), |l| l.to_string()),
        done.restarts
    );
    Ok(ExitCode::SUCCESS)
}
