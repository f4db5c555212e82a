//! Exit codes, documented in docs/EXIT_CODES.md. Cron, systemd and CI alert on these.
//!
//! `dr wal fetch` has its own table: PostgreSQL runs it as `restore_command` and reads any
//! status up to 125 as "not in the archive", which ends recovery (and may promote a copy
//! that lacks the rest of the WAL). So there 1 means only "not in the archive", every failure
//! is 200 + dr's code (fatal for PostgreSQL: recovery stops and can resume), and an
//! interruption is 143, which PostgreSQL reads as a SIGTERM: a shutdown.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use dr_core::Kind;

/// This process is a `dr wal fetch`: every code it exits with is from the fetch table.
static WAL_FETCH: AtomicBool = AtomicBool::new(false);

pub fn code(kind: Kind) -> ExitCode {
    ExitCode::from(number(kind))
}

/// The documented number of a kind (of the fetch table in a `dr wal fetch`).
pub fn number(kind: Kind) -> u8 {
    if WAL_FETCH.load(Ordering::Relaxed) {
        fetch_number(kind)
    } else {
        usual(kind)
    }
}

fn usual(kind: Kind) -> u8 {
    match kind {
        Kind::Failed => 1,
        Kind::Config => 2,
        Kind::Unavailable => 3,
        Kind::Integrity => 4,
        Kind::VerificationFailed => 5,
        Kind::Locked => 6,
        Kind::Refused => 7,
        Kind::Interrupted => 130,
    }
}

/// `dr wal fetch`: 200 + the usual code, above PostgreSQL's 125; 143 (SIGTERM's status) when
/// interrupted.
pub fn fetch_number(kind: Kind) -> u8 {
    match kind {
        Kind::Interrupted => 143,
        other => 200 + usual(other),
    }
}

/// `dr wal fetch`: not in the archive (no record, not a gap). The only status ≤ 125 it uses
/// besides 0.
pub const NOT_IN_ARCHIVE: u8 = 1;

/// `dr status`: a backup is older than the threshold, missing, or its verification failed.
pub const STALE: u8 = 8;

/// From the raw arguments, before clap and before any other work: whether this is a `dr wal
/// fetch`, so that even a usage error or a panic exits with a code of the fetch table (a
/// usage error's 2 or a panic's 101 would read as "not in the archive"). Sets the mode
/// [`number`] follows.
pub fn wal_fetch_requested(args: &[std::ffi::OsString]) -> bool {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| !a.starts_with('-'))
        .collect();
    let fetch = words.windows(2).any(|w| w[0] == "wal" && w[1] == "fetch");
    if fetch {
        WAL_FETCH.store(true, Ordering::Relaxed);
        // A panic is a failure (201), never "not in the archive" (Rust's 101).
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            std::process::exit(i32::from(fetch_number(Kind::Failed)));
        }));
    }
    fetch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_failures_are_above_what_postgresql_reads_as_not_found() {
        for kind in [
            Kind::Failed,
            Kind::Config,
            Kind::Unavailable,
            Kind::Integrity,
            Kind::VerificationFailed,
            Kind::Locked,
            Kind::Refused,
        ] {
            assert_eq!(fetch_number(kind), 200 + usual(kind));
        }
        assert_eq!(fetch_number(Kind::Integrity), 204);
        assert_eq!(fetch_number(Kind::Interrupted), 143);
    }
}
