//! `dr`: PostgreSQL backups you can restore at 3 a.m.
//!
//! The binary parses the command line, runs the command, and maps failures to documented exit
//! codes (see `docs/EXIT_CODES.md` and [`exit::code`]). Everything else lives in `dr-core`.

mod cli;
mod commands;
mod envfile;
mod exit;
mod logging;
mod output;
mod signals;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything else: a SIGTERM from now on is a graceful stop, never a kill.
    signals::hold();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `dr wal fetch` exits with the codes PostgreSQL's restore_command needs, from here on.
    let wal_fetch = exit::wal_fetch_requested(&args);
    // Before clap and before any thread: the file may set DR_CONFIG, PGPASSWORD, AWS_*.
    let env_warning = match envfile::requested(&args) {
        Some(path) => match envfile::load(&path) {
            Ok(w) => w,
            Err(e) => {
                logging::json_requested_early(&args);
                output::print_error(&e);
                return exit::code(dr_core::Kind::Config);
            }
        },
        None => None,
    };
    let cli = match cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap does; usage errors too, unless JSON was asked
        // for: then they are one JSON object like every other stderr line.
        Err(e) if e.use_stderr() && logging::json_requested_early(&args) => {
            let text = e.to_string();
            let text = text.trim().trim_start_matches("error: ");
            output::print_error(&dr_core::Error::config(text));
            return exit::code(dr_core::Kind::Config);
        }
        // A usage error's 2 would tell PostgreSQL "not in the archive": 202 stops recovery.
        Err(e) if e.use_stderr() && wal_fetch => {
            let _ = e.print();
            return exit::code(dr_core::Kind::Config);
        }
        Err(e) => e.exit(),
    };
    logging::init(&cli.global);
    if let Some(w) = env_warning {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let message = format!("cannot start the async runtime: {e}");
            if logging::json_mode() {
                eprintln!("{}", output::event("ERROR", &message));
            } else {
                eprintln!("error: {message}");
            }
            return exit::code(dr_core::Kind::Failed);
        }
    };
    {
        let _in_runtime = runtime.enter();
        signals::listen(match &cli.command {
            cli::Command::Daemon { .. } => signals::Steps::Daemon,
            other => signals::Steps::OneShot(signals::one_shot_message(other)),
        });
    }
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
