//! Logs go to stderr: human on a terminal, JSON with `--log-format json`. stdout is for data.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{Global, LogFormat};

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stderr carries JSON events (`--log-format json`).
pub fn json_mode() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Before the command line is parsed (a bad env file, a usage error): whether it asks for
/// JSON (`--log-format json`, `--log-format=json`, or `DR_LOG_FORMAT=json`), so that even
/// those errors are one JSON object. Sets the mode for [`json_mode`].
pub fn json_requested_early(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let from_args = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    let json = from_args
        || (!args.iter().any(|a| a.starts_with("--log-format"))
            && std::env::var("DR_LOG_FORMAT").is_ok_and(|v| v == "json"));
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    json
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: a successful run prints nothing, so cron mails only failures.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn init(g: &Global) {
    QUIET.store(g.quiet, std::sync::atomic::Ordering::Relaxed);
    JSON.store(
        matches!(g.log_format, LogFormat::Json),
        std::sync::atomic::Ordering::Relaxed,
    );
    let default = match (g.quiet, g.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Third-party crates stay at warn unless asked for: their debug output is noise at 3 a.m.
    // The AWS SDK's credential providers warn with Debug dumps of their errors (`ProviderError
    // { source: … }`) when the chain finds nothing; dr's own error says it readably, with the
    // hint. They stay quiet below error (`DR_LOG=aws_config=debug` shows them).
    let filter = EnvFilter::try_from_env("DR_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,aws_config=error,dr={default},dr_core={default},dr_pg={default},dr_store={default},dr_stream={default},dr_sandbox={default},dr_catalog={default}"
        ))
    });
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match g.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(color)
            .with_target(false)
            .init(),
    }
}

/// Progress bars only for a person watching a terminal.
pub fn progress_enabled(g: &Global) -> bool {
    matches!(g.log_format, LogFormat::Human) && !g.quiet && std::io::stderr().is_terminal()
}
