//! The one error of dr-core: what failed (with what was being done), the details that say
//! why (a child's stderr, each failed check), the lower-level causes, the next step (`hint`),
//! and whether trying again later may help. The binary renders it once (`error:` /
//! `caused by:` / `hint:`, or one JSON object); webhooks and the daemon's retries read the
//! same fields.
//!
//! Leaf crates keep their own `thiserror` enums, each with a structured `hint()` and an
//! `is_transient()` decided where the error is made; converting takes both (the hint, and
//! [`Error::retryable`]), keeps the cause chain and decides [`Kind`].

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
    /// An error from text: the first line is the message, other lines the details (blank
    /// ones dropped). The text is never searched for a hint: give it with [`Error::with_hint`].
    pub fn new(kind: Kind, text: impl Into<String>) -> Error {
        let text = text.into();
        let mut lines = text.lines().map(str::to_owned);
        let message = lines.next().unwrap_or_default();
        Error {
            kind,
            message,
            details: lines.filter(|l| !l.trim().is_empty()).collect(),
            causes: Vec::new(),
            hint: None,
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

    /// Add the next step for the operator (after any hint already there, as `a; b`).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        let hint = hint.into();
        self.hint = Some(match self.hint.take() {
            Some(first) => format!("{first}; {hint}"),
            None => hint,
        });
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

impl Error {
    /// An error from a leaf crate's error: its message (and further lines as details), its
    /// structured hint, its cause chain.
    fn from_leaf(
        kind: Kind,
        e: &(dyn std::error::Error + 'static),
        hint: Option<String>,
        retryable: bool,
    ) -> Error {
        let err = Error::new(kind, e.to_string()).retryable(retryable);
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
        .with_causes(e)
    }
}

impl From<dr_store::StoreError> for Error {
    fn from(e: dr_store::StoreError) -> Self {
        Error::from_store(&e)
    }
}

impl Error {
    fn from_store(e: &dr_store::StoreError) -> Error {
        use dr_store::StoreError as S;
        let kind = match e {
            // Every object dr reads is named by a manifest (or was just listed): one that is
            // gone, or replaced while it was read, means the backup is damaged.
            S::NotFound { .. } | S::Changed { .. } => Kind::Integrity,
            S::Io { source, .. } if disk_full(source) => Kind::Failed,
            S::Io { .. } => Kind::Unavailable,
            S::InvalidLocation { .. }
            | S::InvalidOption { .. }
            | S::InvalidKey { .. }
            | S::Unsupported { .. }
            | S::ObjectLockUnavailable { .. } => Kind::Config,
            S::S3 { .. } | S::Mismatch { .. } | S::ReadBroken { .. } => Kind::Unavailable,
        };
        let mut err = Error::from_leaf(kind, e, e.hint().map(str::to_owned), e.is_transient());
        if e.is_not_found() {
            err.message.push_str(": the backup is damaged");
            err.hint = Some(
                "restore an older backup (`dr list`) and find out what removed the object".into(),
            );
        }
        err
    }
}

impl From<dr_pg::PgError> for Error {
    fn from(e: dr_pg::PgError) -> Self {
        use dr_pg::PgError as P;
        let kind = match &e {
            P::Connect { .. } | P::NoMatchingTool { .. } | P::Spawn { .. } => Kind::Unavailable,
            P::BadUrl { .. } => Kind::Config,
            P::Query { .. } | P::Failed(_) => Kind::Failed,
        };
        Error::from_leaf(kind, &e, e.hint(), e.is_transient())
    }
}

impl From<dr_stream::StreamError> for Error {
    fn from(e: dr_stream::StreamError) -> Self {
        use dr_stream::StreamError as S;
        // A read the store gave up on (a download that could not be resumed, an object
        // replaced mid-read): the store's error says what, where and what to do.
        if let S::Io { source, .. } = &e {
            let store = source
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<dr_store::StoreError>());
            if let Some(store) = store {
                return Error::from_store(store);
            }
        }
        let kind = match &e {
            S::Corrupt { .. } | S::DigestMismatch { .. } | S::WrongIdentity { .. } => {
                Kind::Integrity
            }
            S::BadRecipient { .. } | S::BadIdentity { .. } => Kind::Config,
            S::Io { source, .. } if disk_full(source) => Kind::Failed,
            // Network or disk trouble, not bad data: "could not run", never "the backup is bad".
            S::Io { .. } => Kind::Unavailable,
            S::Thread { .. } => Kind::Failed,
        };
        Error::from_leaf(kind, &e, e.hint(), e.is_transient())
    }
}

impl From<dr_sandbox::SandboxError> for Error {
    /// A sandbox that cannot start means the verification could not run (exit 3).
    fn from(e: dr_sandbox::SandboxError) -> Self {
        Error::from_leaf(Kind::Unavailable, &e, e.hint(), e.is_transient())
    }
}

impl From<dr_stream::signing::SigningError> for Error {
    fn from(e: dr_stream::signing::SigningError) -> Self {
        use dr_stream::signing::SigningError as S;
        let kind = match &e {
            S::BadKeyFile { .. } | S::BadTrustedKey { .. } => Kind::Config,
            S::Sign(_) => Kind::Failed,
        };
        Error::from_leaf(kind, &e, e.hint(), false)
    }
}

impl From<dr_config::ConfigError> for Error {
    fn from(e: dr_config::ConfigError) -> Self {
        Error::from_leaf(Kind::Config, &e, e.hint(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_into_message_and_details_and_the_hint_is_given_apart() {
        let e = Error::new(
            Kind::Failed,
            "pg_dump failed (exit status 1)\npg_dump: error: connection lost\n\n",
        )
        .with_hint("check the network");
        assert_eq!(e.message, "pg_dump failed (exit status 1)");
        assert_eq!(e.details, vec!["pg_dump: error: connection lost"]);
        assert_eq!(e.hint.as_deref(), Some("check the network"));
        assert_eq!(
            e.to_string(),
            "pg_dump failed (exit status 1)\npg_dump: error: connection lost\nhint: check the network"
        );
    }

    /// Hints are structured: text that looks like one (a child's stderr, a server's message)
    /// stays where it was said.
    #[test]
    fn text_is_never_parsed_for_a_hint() {
        let e = Error::new(
            Kind::Failed,
            "pg_restore failed. hint: not ours\nhint: not ours either",
        );
        assert_eq!(e.message, "pg_restore failed. hint: not ours");
        assert_eq!(e.details, vec!["hint: not ours either"]);
        assert_eq!(e.hint, None);
    }

    #[test]
    fn context_prefixes_the_message_only() {
        let e = Error::new(Kind::Failed, "boom\nline")
            .with_hint("h")
            .context("backup of `app`");
        assert_eq!(e.message, "backup of `app`: boom");
        assert_eq!(e.details, vec!["line"]);
        assert_eq!(e.hint.as_deref(), Some("h"));
    }

    fn tool_failure(stderr: &str) -> dr_pg::PgError {
        dr_pg::PgError::Failed(dr_pg::ProcessFailure {
            command: "pg_dump -Fc app".into(),
            status: "exit status 1".into(),
            stderr: format!("{stderr}\n"),
            hint: None,
            transient: dr_pg::lost_connection(stderr),
        })
    }

    /// Each of the 13 phrases error.rs once matched: still retryable, now decided by dr-pg
    /// (a child tool's stderr) or by the typed error (SQLSTATE, I/O kind) where it is made.
    #[test]
    fn transient_failures_are_retryable_and_permanent_ones_are_not() {
        for said in [
            "pg_dump: error: server closed the connection unexpectedly",
            "pg_dump: error: could not receive data from server: Connection reset by peer",
            "pg_dump: error: could not send data to server: Broken pipe",
            "pg_dump: error: connection to server at \"db\" (10.0.0.1), port 5432 failed: Connection refused",
            "pg_dump: error: connection to server failed: timeout expired",
            "pg_dump: error: connection timed out",
            "pg_dump: error: FATAL:  the database system is starting up",
            "pg_dump: error: FATAL:  the database system is shutting down",
            "pg_dump: error: FATAL:  sorry, too many clients already",
            "pg_dump: error: ERROR:  canceling statement due to lock timeout",
            "pg_dump: error: ERROR:  canceling statement due to statement timeout",
        ] {
            assert!(Error::from(tool_failure(said)).retryable, "{said}");
        }
        assert!(!Error::from(tool_failure("pg_dump: error: ERROR:  syntax error")).retryable);
        // The driver's errors carry the decision made from the SQLSTATE or the I/O kind.
        for (code, transient) in [
            ("08006", true),  // connection_failure: "server closed the connection"
            ("57P03", true),  // cannot_connect_now: starting up / shutting down
            ("53300", true),  // too_many_connections
            ("55P03", true),  // lock_not_available: lock timeout
            ("57014", true),  // query_canceled: statement timeout
            ("42601", false), // syntax_error
            ("28P01", false), // invalid_password
            ("3D000", false), // invalid_catalog_name: the database does not exist
        ] {
            assert_eq!(dr_pg::transient_sqlstate(code), transient, "{code}");
            let query = dr_pg::PgError::Query {
                what: "counting".into(),
                detail: format!("SQLSTATE {code}"),
                hint: None,
                transient,
            };
            assert_eq!(Error::from(query).retryable, transient, "{code}");
        }
        let refused = dr_pg::PgError::Connect {
            target: "postgres://app@db/app".into(),
            detail: "error connecting to server: Connection refused (os error 111)".into(),
            hint: "is PostgreSQL running".into(),
            transient: true,
        };
        let e = Error::from(refused);
        assert!(e.retryable);
        assert_eq!(e.kind, Kind::Unavailable);
        assert_eq!(e.hint.as_deref(), Some("is PostgreSQL running"));
        assert!(
            !e.to_string().contains("hint: is PostgreSQL running\nhint"),
            "{e}"
        );
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
        assert_eq!(
            e.to_string(),
            "S3 PutObject of `s3://b/k` failed: denied\nhint: check the key"
        );
        let missing = Error::from(dr_store::StoreError::NotFound { key: "a/b".into() });
        assert_eq!(missing.kind, Kind::Integrity);
        assert!(missing
            .to_string()
            .contains("hint: restore an older backup"));
    }

    #[test]
    fn a_full_disk_is_neither_transient_nor_unavailable() {
        let full = dr_stream::StreamError::Io {
            stage: "writing the decrypted archive".into(),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        };
        let e = Error::from(full);
        assert_eq!((e.kind, e.retryable), (Kind::Failed, false));
        let reset = dr_stream::StreamError::Io {
            stage: "reading `k`".into(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        let e = Error::from(reset);
        assert_eq!((e.kind, e.retryable), (Kind::Unavailable, true));
    }

    /// A download the store could not resume reaches the decoder as an I/O error; its
    /// message, hint and kind are still the store's.
    #[test]
    fn a_read_the_store_gave_up_on_keeps_its_kind_and_hint() {
        let broken = dr_store::StoreError::ReadBroken {
            key: "app/1/data-1.zst.age".into(),
            location: "s3://b/dr".into(),
            offset: 10,
            size: 20,
            attempts: 3,
            secs: 4,
            cause: "connection reset by peer".into(),
        };
        let e = Error::from(dr_stream::StreamError::Io {
            stage: "reading `app/1/data-1.zst.age`".into(),
            source: std::io::Error::other(broken),
        });
        assert_eq!((e.kind, e.retryable), (Kind::Unavailable, true));
        assert!(
            e.message.starts_with(
                "reading `app/1/data-1.zst.age` from s3://b/dr broke off at byte 10 of 20"
            ),
            "{e}"
        );
        assert!(
            e.hint
                .as_deref()
                .is_some_and(|h| h.contains("DR_READ_RESUME_SECS")),
            "{e}"
        );
        let changed = dr_store::StoreError::Changed {
            key: "k".into(),
            location: "s3://b/dr".into(),
            offset: 10,
            detail: "its ETag was \"a\" and is now \"b\"".into(),
        };
        let e = Error::from(dr_stream::StreamError::Io {
            stage: "reading `k`".into(),
            source: std::io::Error::other(changed),
        });
        assert_eq!((e.kind, e.retryable), (Kind::Integrity, false));
    }

    /// Hints come from the leaf errors' `hint()`, rendered as before: one `hint:` line.
    #[test]
    fn leaf_hints_are_structured_and_render_as_before() {
        let e = Error::from(dr_stream::StreamError::DigestMismatch {
            object: "a/b".into(),
            expected: "00".into(),
            actual: "11".into(),
        });
        assert_eq!(
            e.to_string(),
            "checksum mismatch for `a/b`: expected sha256 00, got 11\nhint: the object was changed after the backup; restore an older backup (`dr list`)"
        );
        let e = Error::from(dr_pg::PgError::BadUrl {
            url: "x".into(),
            detail: "no host".into(),
        });
        assert_eq!(
            (e.kind, e.hint.as_deref()),
            (
                Kind::Config,
                Some("write e.g. postgres://user@host:5432/dbname")
            )
        );
        let e = Error::from(dr_sandbox::SandboxError::NotReady {
            secs: 5,
            what: "container x".into(),
            log: vec!["FATAL: boom".into()],
            hint: "raise verify.ready_timeout".into(),
        });
        assert_eq!(e.details, vec!["last log lines:", "  FATAL: boom"]);
        assert_eq!(e.hint.as_deref(), Some("raise verify.ready_timeout"));
        let built = Error::new(Kind::Failed, "boom")
            .with_hint("first")
            .with_hint("second");
        assert_eq!(built.hint.as_deref(), Some("first; second"));
        assert_eq!(built.to_string(), "boom\nhint: first; second");
    }

    #[test]
    fn kinds_serialize_as_documented_names() {
        let json = serde_json::to_value(Error::new(Kind::VerificationFailed, "x")).expect("json");
        assert_eq!(json["kind"], "verification_failed");
    }
}
