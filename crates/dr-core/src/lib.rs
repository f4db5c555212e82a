//! The operations an operator runs, composed from the leaf crates: backup, list/show,
//! restore, verify, prune, check, and the run lock that keeps them from overlapping.
//!
//! dr-core knows the order of things (the manifest is written last; integrity is checked
//! before a target is touched; a lock is held while a target is backed up) and turns every
//! failure into an [`Error`] with a [`Kind`] the binary maps to an exit code. What
//! PostgreSQL's tools print (a `pg_restore --list`, a globals script) is read by `dr_pg`;
//! dr-core decides what to do with it. [`restore`] is one module per step; [`verify`]
//! restores through [`restore::run_into`] with the backup it has opened.
//!
//! ```no_run
//! # async fn demo(config: dr_config::Config) -> Result<(), dr_core::Error> {
//! let ctx = dr_core::Context::open(config).await?;
//! for target in ctx.config.select_targets(None).map_err(dr_core::Error::config)? {
//!     let manifest = dr_core::backup::run(&ctx, target).await?;
//!     println!("{}", manifest.id);
//! }
//! # Ok(()) }
//! ```

pub mod backup;
pub mod check;
pub mod daemon;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod verify;

use std::fmt;
use std::sync::Arc;

use dr_config::Config;
use dr_store::ObjectStore;
use tokio_util::sync::CancellationToken;

/// dr's version, recorded in manifests and verification records.
pub const DR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What kind of failure: the binary maps each to a documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// An operator-facing error: what failed, on what, and the next step.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
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
}

/// A local disk that is full (or over quota): retrying will not help, so it is not
/// "unavailable" (exit 3, which invites retries) but a failure (exit 1) that needs room.
fn disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}

impl From<dr_store::StoreError> for Error {
    fn from(e: dr_store::StoreError) -> Self {
        use dr_store::StoreError as S;
        match &e {
            // Every object dr reads is named by a manifest (or was just listed): one that is
            // gone means the backup is damaged.
            S::NotFound { .. } => Error::new(
                Kind::Integrity,
                format!("{e}: the backup is damaged\nhint: restore an older backup (`dr list`) and find out what removed the object"),
            ),
            S::Io { source, .. } if disk_full(source) => Error::new(Kind::Failed, e.to_string()),
            S::InvalidLocation { .. } | S::InvalidKey { .. } => Error::new(Kind::Config, e.to_string()),
            _ => Error::new(Kind::Unavailable, e.to_string()),
        }
    }
}

impl From<dr_pg::PgError> for Error {
    fn from(e: dr_pg::PgError) -> Self {
        let kind = match &e {
            dr_pg::PgError::Connect { .. }
            | dr_pg::PgError::NoMatchingTool { .. }
            | dr_pg::PgError::Spawn { .. } => Kind::Unavailable,
            dr_pg::PgError::BadUrl { .. } => Kind::Config,
            _ => Kind::Failed,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<dr_stream::StreamError> for Error {
    fn from(e: dr_stream::StreamError) -> Self {
        use dr_stream::StreamError as S;
        let kind = match &e {
            S::Corrupt { .. } | S::DigestMismatch { .. } | S::WrongIdentity { .. } => {
                Kind::Integrity
            }
            S::BadRecipient { .. } | S::BadIdentity { .. } => Kind::Config,
            S::Io { source, .. } if disk_full(source) => Kind::Failed,
            // Network or disk trouble, not bad data: "could not run", never "the backup is bad".
            S::Io { .. } => Kind::Unavailable,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<dr_config::ConfigError> for Error {
    fn from(e: dr_config::ConfigError) -> Self {
        Error::config(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an operation needs: the config, the opened repository, the cancellation signal.
pub struct Context {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    /// Cancelled on SIGINT/SIGTERM: operations abort uploads, kill children, remove temp files.
    pub cancel: CancellationToken,
    /// Show progress bars (stderr is a terminal and logs are human).
    pub progress: bool,
}

impl Context {
    pub async fn open(config: Config) -> Result<Context> {
        let location = repository_location(&config)?;
        let store = dr_store::open(&location).await?;
        Ok(Context {
            config,
            store,
            cancel: CancellationToken::new(),
            progress: false,
        })
    }

    /// The same context with another cancellation token (a child of this one, usually):
    /// a run with a deadline of its own, still stopped by a signal.
    pub fn with_cancel(&self, cancel: CancellationToken) -> Context {
        Context {
            config: self.config.clone(),
            store: Arc::clone(&self.store),
            cancel,
            progress: self.progress,
        }
    }

    /// Parsed recipients (inline and from `recipients_file`).
    pub fn recipients(&self) -> Result<dr_stream::Recipients> {
        let list = self.config.recipients()?;
        Ok(dr_stream::Recipients::parse(&list)?)
    }

    /// The private identities; an error with a hint when none is configured.
    pub fn identities(&self) -> Result<dr_stream::Identities> {
        match &self.config.encryption.identity_file {
            Some(p) => Ok(dr_stream::Identities::from_file(p)?),
            None => Err(Error::config(
                "no age identity configured: restoring, verifying and showing details need the private key\nhint: set encryption.identity_file (or DR_IDENTITY_FILE) to the file `dr keygen` wrote",
            )),
        }
    }
}

/// A `--target NAME` from the command line: a configured target, or one the repository
/// still holds backups of (a target removed from the config can still be listed and
/// restored). Anything else is a usage error naming the configured targets, never an empty
/// answer that reads as "all backups are gone".
pub async fn check_target_name(ctx: &Context, name: &str) -> Result<()> {
    let configured: Vec<&str> = ctx.config.targets.iter().map(|t| t.name.as_str()).collect();
    let hint = format!(
        "hint: configured targets: {}",
        if configured.is_empty() {
            "none".to_string()
        } else {
            configured.join(", ")
        }
    );
    if !dr_config::valid_target_name(name) {
        return Err(Error::config(format!(
            "`{name}` is not a target name (1-64 letters, digits, `-` or `_`)\n{hint}"
        )));
    }
    if configured.contains(&name) {
        return Ok(());
    }
    let stored = ctx
        .store
        .list(&format!("{name}/"))
        .await
        .map_err(|e| Error::from(e).context("listing the repository"))?;
    if stored.is_empty() {
        return Err(Error::config(format!(
            "no target named `{name}` is configured, and the repository holds nothing of it\n{hint}"
        )));
    }
    Ok(())
}

pub fn repository_location(config: &Config) -> Result<dr_store::Location> {
    let r = &config.repository;
    dr_store::Location::parse(
        &r.url,
        r.endpoint.as_deref(),
        r.region.as_deref(),
        r.path_style,
    )
    .map_err(|e| Error::config(e.to_string()))
}

/// Human byte sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
