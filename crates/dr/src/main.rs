//! `dr`: PostgreSQL backups you can restore at 3 a.m.
//!
//! The binary parses the command line, runs the command, and maps failures to documented exit
//! codes (see `docs/EXIT_CODES.md` and [`exit::code`]). Everything else lives in `dr-core`.

mod cli;
mod commands;
mod exit;
mod logging;
mod output;
mod signals;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    logging::init(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            crate::output::print_error(&e);
            exit::code(e.kind)
        }
    };
    // A blocking stage still draining after a signal must not hold the exit hostage.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
