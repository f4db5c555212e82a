//! Exit codes, documented in docs/EXIT_CODES.md. Cron, systemd and CI alert on these.

use std::process::ExitCode;

use dr_core::Kind;

pub fn code(kind: Kind) -> ExitCode {
    ExitCode::from(number(kind))
}

/// The documented number of a kind.
pub fn number(kind: Kind) -> u8 {
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

/// `dr status`: a backup is older than the threshold, missing, or its verification failed.
pub const STALE: u8 = 8;
