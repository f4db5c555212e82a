//! The one error type of the crate, written for the operator who reads it at 3am.

use std::path::PathBuf;

/// Everything that can go wrong talking to a repository.
///
/// Each message names the object (`key`) and the bucket or directory; the next step, where
/// one is obvious, is [`StoreError::hint`] (never in the message), and whether trying again
/// may help is [`StoreError::is_transient`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist. `key` is relative to the repository prefix.
    #[error("object `{key}` not found in the repository")]
    NotFound { key: String },

    /// The repository URL in the configuration cannot be used.
    #[error("invalid repository url `{url}`: {reason}")]
    InvalidLocation {
        url: String,
        reason: String,
        hint: &'static str,
    },

    /// A backend option in the configuration cannot be used. `key` is its full name, e.g.
    /// `repository.s3.endpoint`.
    #[error("invalid {key}: {reason}")]
    InvalidOption {
        key: String,
        reason: String,
        hint: String,
    },

    /// A key handed to the store is not a plain relative '/'-separated path.
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    /// A request to S3 (or an S3-compatible service) failed after retries.
    #[error("S3 {operation} of `{target}` failed: {message}")]
    S3 {
        /// e.g. "PutObject"
        operation: &'static str,
        /// `s3://bucket/key`
        target: String,
        /// The service error code (`NoSuchBucket`, `AccessDenied`, ...) when the service sent one.
        code: Option<String>,
        /// The HTTP status when a response arrived.
        status: Option<u16>,
        /// The full error chain.
        message: String,
        hint: Option<String>,
    },

    /// A filesystem operation of the directory store failed.
    #[error("{action} `{}` failed: {source}", .path.display())]
    Io {
        /// e.g. "write", "rename", "list"
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        hint: Option<String>,
    },

    /// The repository's storage cannot do this (Object Lock or versions on a directory).
    #[error("{what} is not available on {location} (object `{key}`)")]
    Unsupported {
        what: &'static str,
        location: String,
        key: String,
    },

    /// `[repository.object_lock]` is configured but the bucket cannot lock objects.
    #[error(
        "[repository.object_lock] is configured, but {location} cannot lock objects: {reason}"
    )]
    ObjectLockUnavailable {
        location: String,
        reason: String,
        hint: String,
    },

    /// A download broke off mid-body and could not be resumed: the store stayed away past
    /// the read policy's deadline or attempts (`dr_retry::S3_READ_RESUME`), or answered a
    /// resumed request with other bytes than asked for.
    #[error("reading `{key}` from {location} broke off at byte {offset} of {size} and could not be resumed ({attempts} attempts over {secs} s): {cause}")]
    ReadBroken {
        key: String,
        location: String,
        /// The bytes the reader had passed on.
        offset: u64,
        size: u64,
        /// Tries that failed since the last byte arrived.
        attempts: u32,
        secs: u64,
        /// The last failure.
        cause: String,
    },

    /// The object was replaced between two requests of one read: the rest of a download is
    /// never taken from another object.
    #[error(
        "object `{key}` in {location} changed while it was being read (at byte {offset}): {detail}"
    )]
    Changed {
        key: String,
        location: String,
        offset: u64,
        detail: String,
    },

    /// What was read back is not what was written (probe, multipart size check).
    #[error("object `{key}` in {location} does not match what was written: {detail}")]
    Mismatch {
        key: String,
        location: String,
        detail: String,
    },
}

impl StoreError {
    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// The next step for the operator, if the error knows one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            StoreError::InvalidLocation { hint, .. } => Some(hint),
            StoreError::InvalidOption { hint, .. } => Some(hint),
            StoreError::ObjectLockUnavailable { hint, .. } => Some(hint),
            StoreError::S3 { hint, .. } | StoreError::Io { hint, .. } => hint.as_deref(),
            StoreError::ReadBroken { .. } => Some("the repository stopped serving the object mid-download and did not come back in time: check the network to the endpoint and the provider's status, then run the command again; DR_READ_RESUME_SECS=SECONDS (default 300) waits out a longer outage"),
            StoreError::Changed { .. } => Some("a backup object never changes once written: find out what replaced it (the bucket's access log), then run the command again; what is read is still checked against the manifest's digest"),
            StoreError::Unsupported { .. } => Some("Object Lock and object versions need an S3 bucket that supports them (see [repository.object_lock] in docs/CONFIGURATION.md)"),
            StoreError::NotFound { .. } | StoreError::InvalidKey { .. } | StoreError::Mismatch { .. } => None,
        }
    }

    /// AWS's answer to a conditional write racing another to the same key (409
    /// `ConditionalRequestConflict`): tried again at once, not later.
    pub fn is_write_conflict(&self) -> bool {
        matches!(self, StoreError::S3 { code, status, .. }
            if code.as_deref() == Some("ConditionalRequestConflict") || *status == Some(409))
    }

    /// Trying again later may help: no answer at all (the network), a 5xx, throttling or a
    /// request timeout from the service, or a read-back that did not match (eventual
    /// consistency). Never a missing object, a bad configuration or a local disk error.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::S3 { status, code, .. } => {
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
                transient || throttled
            }
            // The network again, only longer than the policy waited.
            StoreError::Mismatch { .. } | StoreError::ReadBroken { .. } => true,
            StoreError::NotFound { .. }
            | StoreError::Changed { .. }
            | StoreError::InvalidLocation { .. }
            | StoreError::InvalidOption { .. }
            | StoreError::InvalidKey { .. }
            | StoreError::Io { .. }
            | StoreError::Unsupported { .. }
            | StoreError::ObjectLockUnavailable { .. } => false,
        }
    }

    pub(crate) fn unsupported(what: &'static str, location: &crate::Location, key: &str) -> Self {
        StoreError::Unsupported {
            what,
            location: location.to_string(),
            key: key.to_owned(),
        }
    }

    /// The S3 error code (`AccessDenied`, `NoSuchKey`, ...) when the service sent one.
    pub fn s3_code(&self) -> Option<&str> {
        match self {
            StoreError::S3 { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => Some(
                "check that the user running dr can write to the repository directory".to_owned(),
            ),
            std::io::ErrorKind::StorageFull => Some(
                "the repository filesystem is full; free space or prune old backups".to_owned(),
            ),
            _ => None,
        };
        StoreError::Io {
            action,
            path: path.into(),
            source,
            hint,
        }
    }
}
