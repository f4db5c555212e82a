//! The one error of dr-core: what failed (with what was being done), the details that say
//! why (a child's stderr, each failed check), the lower-level causes, the next step (`hint`),
//! and whether trying again later may help. The binary renders it once (`error:` /
//! `caused by:` / `hint:`, or one JSON object); webhooks and the daemon's retries read the
//! same fields.
//!
//! Leaf crates keep their own `thiserror` enums; converting keeps their hint and cause chain
//! and decides [`Kind`] and [`Error::retryable`] from what actually went wrong.

use std::fmt;

use serde::Serialize;

/// What kind of failure: the binary maps each to a documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Anything else (exit 1).
    Failed,
    /// Bad configuration or arguments (exit 2).
    Config,
    /// A database, bucket or tool could not be reached or found (exit 3).
    Unavailable,
    /// Stored data failed an integrity check, or the identity does not fit (exit 4).
    Integrity,
    /// A verification ran and found the backup wrong (exit 5).
    VerificationFailed,
    /// Another run holds the lock (exit 6).
    Locked,
    /// The restore target is not empty and neither --clean nor --force was given (exit 7).
    Refused,
    /// Interrupted by a signal; cleaned up (exit 130).
    Interrupted,
}

/// An operator-facing error: what failed, on what, why, and the next step.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    pub kind: Kind,
    /// One line: what failed, prefixed by what was being done ([`Error::context`]).
    pub message: String,
    /// Further lines that belong to the message: a child's stderr tail, each failed check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Lower-level causes (outermost first) not already said by the message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// The next step for the operator.
    pub hint: Option<String>,
    /// Trying again later may help: the network, a 5xx, throttling, a server starting up,
    /// a lock held by someone else. The daemon retries these; never anything else.
    pub retryable: bool,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for d in &self.details {
            write!(f, "\n{d}")?;
        }
        for c in &self.causes {
            write!(f, "\ncaused by: {c}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An error from text: the first line is the message, `hint: …` lines (or a trailing
    /// `. hint: …`) become the hint, other lines the details.
    pub fn new(kind: Kind, text: impl Into<String>) -> Error {
        let text = text.into();
        let mut lines: Vec<String> = Vec::new();
        let mut hints: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("hint: ") {
                hints.push(h.to_string());
            } else if let Some((before, h)) = line.split_once(". hint: ") {
                lines.push(before.to_string());
                hints.push(h.to_string());
            } else {
                lines.push(line.to_string());
            }
        }
        let mut lines = lines.into_iter();
        let message = lines.next().unwrap_or_default();
        Error {
            kind,
            message,
            details: lines.filter(|l| !l.trim().is_empty()).collect(),
            causes: Vec::new(),
            hint: (!hints.is_empty()).then(|| hints.join("; ")),
            retryable: false,
        }
    }

    pub fn config(e: impl fmt::Display) -> Error {
        Error::new(Kind::Config, e.to_string())
    }

    pub fn interrupted(what: &str) -> Error {
        Error::new(
            Kind::Interrupted,
            format!("{what} was interrupted by a signal; nothing was committed and the partial upload was aborted"),
        )
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Mark whether trying again later may help.
    pub fn retryable(mut self, yes: bool) -> Error {
        self.retryable = yes;
        self
    }

    /// Add the causes of `source` (its `source()` chain) that the message does not already say.
    fn with_causes(mut self, source: &(dyn std::error::Error + 'static)) -> Error {
        let mut next = source.source();
        while let Some(c) = next {
            let text = c.to_string();
            let said =
                self.message.contains(&text) || self.details.iter().any(|d| d.contains(&text));
            if !text.is_empty() && !said {
                self.causes.push(text);
            }
            next = c.source();
        }
        self
    }

    /// The message with its details: what a one-line-per-event consumer shows.
    pub fn summary(&self) -> String {
        std::iter::once(self.message.as_str())
            .chain(self.details.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A local disk that is full (or over quota): retrying will not help, so it is not
/// "unavailable" (exit 3, which invites retries) but a failure (exit 1) that needs room.
fn disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}

/// Words of a lost or refused connection in a tool's or driver's message: worth another try.
fn sounds_transient(text: &str) -> bool {
    const SIGNS: [&str; 13] = [
        "server closed the connection",
        "could not receive data",
        "could not send data",
        "connection reset",
        "connection refused",
        "timed out",
        "timeout expired",
        "broken pipe",
        "the database system is starting up",
        "the database system is shutting down",
        "too many clients",
        "canceling statement due to lock timeout",
        "canceling statement due to statement timeout",
    ];
    let lower = text.to_lowercase();
    SIGNS.iter().any(|s| lower.contains(s))
}

impl From<dr_store::StoreError> for Error {
    fn from(e: dr_store::StoreError) -> Self {
        use dr_store::StoreError as S;
        let (kind, retryable) = match &e {
            // Every object dr reads is named by a manifest (or was just listed): one that is
            // gone means the backup is damaged.
            S::NotFound { .. } => (Kind::Integrity, false),
            S::Io { source, .. } if disk_full(source) => (Kind::Failed, false),
            S::Io { .. } => (Kind::Unavailable, false),
            S::InvalidLocation { .. }
            | S::InvalidOption { .. }
            | S::InvalidKey { .. }
            | S::Unsupported { .. }
            | S::ObjectLockUnavailable { .. } => (Kind::Config, false),
            S::S3 { status, code, .. } => {
                let throttled = matches!(
                    code.as_deref(),
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                    )
                );
                let transient = match status {
                    None => true, // no response: the network
                    Some(s) => *s >= 500 || *s == 429 || *s == 408,
                };
                (Kind::Unavailable, transient || throttled)
            }
            S::Mismatch { .. } => (Kind::Unavailable, true),
        };
        let mut err = Error::new(kind, e.to_string()).retryable(retryable);
        if matches!(e, S::NotFound { .. }) {
            err.message.push_str(": the backup is damaged");
            err.hint = Some(
                "restore an older backup (`dr list`) and find out what removed the object".into(),
            );
        }
        err.with_causes(&e)
    }
}

impl From<dr_pg::PgError> for Error {
    fn from(e: dr_pg::PgError) -> Self {
        use dr_pg::PgError as P;
        let text = e.to_string();
        let (kind, retryable) = match &e {
            P::Connect { detail, .. } => {
                let permanent = [
                    "authentication",
                    "does not exist",
                    "permission denied",
                    "certificate",
                    "no password",
                ]
                .iter()
                .any(|w| detail.contains(w));
                (Kind::Unavailable, !permanent)
            }
            P::NoMatchingTool { .. } | P::Spawn { .. } => (Kind::Unavailable, false),
            P::BadUrl { .. } => (Kind::Config, false),
            P::Query { .. } | P::Failed(_) => (Kind::Failed, sounds_transient(&text)),
        };
        Error::new(kind, text).retryable(retryable).with_causes(&e)
    }
}

impl From<dr_stream::StreamError> for Error {
    fn from(e: dr_stream::StreamError) -> Self {
        use dr_stream::StreamError as S;
        let (kind, retryable) = match &e {
            S::Corrupt { .. } | S::DigestMismatch { .. } | S::WrongIdentity { .. } => {
                (Kind::Integrity, false)
            }
            S::BadRecipient { .. } | S::BadIdentity { .. } => (Kind::Config, false),
            S::Io { source, .. } if disk_full(source) => (Kind::Failed, false),
            // Network or disk trouble, not bad data: "could not run", never "the backup is bad".
            S::Io { .. } => (Kind::Unavailable, true),
            S::Thread { .. } => (Kind::Failed, false),
        };
        Error::new(kind, e.to_string())
            .retryable(retryable)
            .with_causes(&e)
    }
}

impl From<dr_config::ConfigError> for Error {
    fn from(e: dr_config::ConfigError) -> Self {
        Error::config(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_into_message_details_and_hint() {
        let e = Error::new(
            Kind::Failed,
            "pg_dump failed (exit status 1)\npg_dump: error: connection lost\n\nhint: check the network",
        );
        assert_eq!(e.message, "pg_dump failed (exit status 1)");
        assert_eq!(e.details, vec!["pg_dump: error: connection lost"]);
        assert_eq!(e.hint.as_deref(), Some("check the network"));
        assert_eq!(
            e.to_string(),
            "pg_dump failed (exit status 1)\npg_dump: error: connection lost\nhint: check the network"
        );
        let inline = Error::new(
            Kind::Config,
            "invalid repository url `x`: no bucket. hint: write s3://B/P",
        );
        assert_eq!(inline.message, "invalid repository url `x`: no bucket");
        assert_eq!(inline.hint.as_deref(), Some("write s3://B/P"));
    }

    #[test]
    fn context_prefixes_the_message_only() {
        let e = Error::new(Kind::Failed, "boom\nhint: h").context("backup of `app`");
        assert_eq!(e.message, "backup of `app`: boom");
        assert_eq!(e.hint.as_deref(), Some("h"));
    }

    #[test]
    fn transient_failures_are_retryable_and_permanent_ones_are_not() {
        let lost = dr_pg::PgError::Query {
            what: "counting".into(),
            detail: "server closed the connection unexpectedly".into(),
        };
        assert!(Error::from(lost).retryable);
        let syntax = dr_pg::PgError::Query {
            what: "counting".into(),
            detail: "ERROR: syntax error".into(),
        };
        assert!(!Error::from(syntax).retryable);
        let throttled = dr_store::StoreError::S3 {
            operation: "PutObject",
            target: "s3://b/k".into(),
            code: Some("SlowDown".into()),
            status: Some(503),
            message: "slow down".into(),
            hint: None,
        };
        assert!(Error::from(throttled).retryable);
        let denied = dr_store::StoreError::S3 {
            operation: "PutObject",
            target: "s3://b/k".into(),
            code: Some("AccessDenied".into()),
            status: Some(403),
            message: "denied".into(),
            hint: Some("check the key".into()),
        };
        let e = Error::from(denied);
        assert!(!e.retryable);
        assert_eq!(e.hint.as_deref(), Some("check the key"));
        let missing = Error::from(dr_store::StoreError::NotFound { key: "a/b".into() });
        assert_eq!(missing.kind, Kind::Integrity);
        assert!(missing
            .to_string()
            .contains("hint: restore an older backup"));
    }

    #[test]
    fn kinds_serialize_as_documented_names() {
        let json = serde_json::to_value(Error::new(Kind::VerificationFailed, "x")).expect("json");
        assert_eq!(json["kind"], "verification_failed");
    }
}
