use std::process::ExitCode;

use dr_core::{Context, Error, Kind, Result};

use crate::cli::RestoreArgs;

pub async fn run(_ctx: &Context, _args: RestoreArgs) -> Result<ExitCode> {
    Err(Error::new(Kind::Failed, "restore: not implemented yet"))
}
