//! stdout is for data. A closed pipe (`dr list | head`) ends the program quietly, like any
//! Unix tool, instead of panicking.

use std::io::Write;

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for data on stdout.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}

/// Print a failure on stderr, once: `error:` with its details, `caused by:` lines and the
/// `hint:` for people; with `--log-format json` one JSON object like the log events, with the
/// error's fields (kind, message, details, causes, hint, retryable) and the exit code.
pub fn print_error(e: &dr_core::Error) {
    if crate::logging::json_mode() {
        let event = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "ERROR",
            "fields": { "message": e.message },
            "error": e,
            "exit_code": crate::exit::number(e.kind),
        });
        eprintln!("{event}");
    } else {
        eprintln!("error: {e}");
    }
}
