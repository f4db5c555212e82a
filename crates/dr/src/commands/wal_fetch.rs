//! `dr wal fetch NAME DEST`: PostgreSQL's `restore_command` (`dr_core::wal::fetch`). Nothing
//! on stdout: the exit status is the answer PostgreSQL reads (the fetch table of
//! docs/EXIT_CODES.md, see `crate::exit`).

use std::path::Path;
use std::process::ExitCode;

use dr_core::wal::fetch::{self, Fetched, Request};
use dr_core::{Context, Result};

pub async fn run(ctx: &Context, target: Option<&str>, name: &str, dest: &Path) -> Result<ExitCode> {
    let target = fetch::target(ctx, target).await?;
    match fetch::fetch(ctx, &Request::new(&target, name, dest)).await? {
        Fetched::Written(_) => Ok(ExitCode::SUCCESS),
        Fetched::NotFound => Ok(ExitCode::from(crate::exit::NOT_IN_ARCHIVE)),
    }
}
