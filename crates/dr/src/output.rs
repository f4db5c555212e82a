//! stdout is for data. A closed pipe (`dr list | head`) ends the program quietly, like any
//! Unix tool, instead of panicking.

use std::io::Write;

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        if crate::logging::json_mode() {
            eprintln!("{}", event("ERROR", &format!("writing to stdout: {e}")));
        } else {
            eprintln!("error: writing to stdout: {e}");
        }
        std::process::exit(1);
    }
}

/// `println!` for data on stdout.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}

/// A message for the person running the command (a completion line, a summary) on stderr:
/// the text as is for people, with `--log-format json` one JSON object shaped like the log
/// events (`timestamp`, `level`, `fields.message`, `target`), so every stderr line parses.
/// Silent with `-q`.
pub fn note(args: std::fmt::Arguments<'_>) {
    if crate::logging::quiet() {
        return;
    }
    if crate::logging::json_mode() {
        let text = args.to_string();
        for line in text.lines() {
            eprintln!("{}", event("INFO", line));
        }
    } else {
        eprintln!("{args}");
    }
}

/// `eprintln!` for messages (not logs, not data): see [`note`].
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => { $crate::output::note(format_args!($($t)*)) };
}

/// One stderr event in the shape `tracing-subscriber`'s JSON formatter writes.
pub fn event(level: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level,
        "fields": { "message": message },
        "target": "dr",
    })
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
