//! The operations an operator runs, composed from the leaf crates: backup, list/show,
//! status, restore, verify, prune, check, and the run lock that keeps them from overlapping.
//! [`list`], [`status`] and [`check`] return typed rows (serialized as `docs/JSON.md` says);
//! the `dr` binary only prints them.
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
//! for target in ctx.config.select_targets(None).map_err(dr_core::Error::from)? {
//!     let manifest = dr_core::backup::run(&ctx, target).await?;
//!     println!("{}", manifest.id);
//! }
//! # Ok(()) }
//! ```

mod error;

pub use error::{Error, Kind};

pub mod backup;
pub mod check;
pub mod copy;
pub mod host;
pub mod immutable;
pub mod list;
pub mod lock;
pub mod progress;
pub mod proof;
pub mod prune;
pub mod repo;
pub mod resign;
pub mod restore;
pub mod rto;
pub mod status;
pub mod time;
pub mod trust;
pub mod undelete;
pub mod verify;
pub mod wal;

#[cfg(test)]
mod testing;

use std::sync::Arc;

use dr_config::Config;
use dr_store::ObjectStore;
use tokio_util::sync::CancellationToken;

/// dr's version, recorded in manifests and verification records.
pub const DR_VERSION: &str = env!("CARGO_PKG_VERSION");

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an operation needs: the config, the opened repository, the cancellation signal.
pub struct Context {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    /// Cancelled on SIGINT/SIGTERM: operations abort uploads, kill children, remove temp files.
    pub cancel: CancellationToken,
    /// Show progress bars (stderr is a terminal and logs are human).
    pub progress: bool,
    /// A run of `dr daemon`: a run lock nobody refreshes is waited out to its expiry (its
    /// holder may have crashed) rather than costing the night's run (see [`lock`]).
    pub scheduled: bool,
    /// `[signing]`: this host's signing key and the keys it trusts (see [`trust`]).
    pub signing: Arc<trust::Signing>,
    /// How a server dr starts for recovery (a drill's or a restore's sandbox) runs
    /// `dr wal fetch`: this binary with this run's config and env file. Empty: this binary
    /// with the config file dr read.
    pub fetch_argv: Vec<String>,
}

impl Context {
    pub async fn open(config: Config) -> Result<Context> {
        // Before the network: a broken [signing] is a config error (exit 2).
        let signing = Arc::new(trust::Signing::from_config(&config)?);
        let store = open_repository(&config).await?;
        Ok(Context {
            config,
            store,
            cancel: CancellationToken::new(),
            progress: false,
            scheduled: false,
            signing,
            fetch_argv: Vec::new(),
        })
    }

    /// The same config, repository and keys with a cancellation of its own: for work that
    /// must finish after a stop signal (the WAL stream's last upload of what it received).
    pub fn detached(&self) -> Context {
        Context {
            config: self.config.clone(),
            store: Arc::clone(&self.store),
            cancel: CancellationToken::new(),
            progress: false,
            scheduled: self.scheduled,
            signing: Arc::clone(&self.signing),
            fetch_argv: self.fetch_argv.clone(),
        }
    }

    /// A context over `store`, opened elsewhere (an in-memory store in tests): not cancelled,
    /// no progress bars, not a scheduled run.
    pub fn with_store(
        config: Config,
        store: Arc<dyn ObjectStore>,
        signing: trust::Signing,
    ) -> Context {
        Context {
            config,
            store,
            cancel: CancellationToken::new(),
            progress: false,
            scheduled: false,
            signing: Arc::new(signing),
            fetch_argv: Vec::new(),
        }
    }

    /// The same context with another cancellation token (a child of this one, usually):
    /// a run with a deadline of its own, still stopped by a signal.
    pub fn with_cancel(&self, cancel: CancellationToken) -> Context {
        Context {
            config: self.config.clone(),
            store: Arc::clone(&self.store),
            cancel,
            progress: self.progress,
            scheduled: self.scheduled,
            signing: Arc::clone(&self.signing),
            fetch_argv: self.fetch_argv.clone(),
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
                "no age identity configured: restoring, verifying and showing details need the private key",
            ).with_hint("set encryption.identity_file (or DR_IDENTITY_FILE) to the file `dr keygen` wrote")),
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
        "configured targets: {}",
        if configured.is_empty() {
            "none".to_string()
        } else {
            configured.join(", ")
        }
    );
    if !dr_catalog::members::valid_target_name(name) {
        return Err(Error::config(format!(
            "`{name}` is not a target name (1-64 letters, digits, `-` or `_`)"
        ))
        .with_hint(hint));
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
            "no target named `{name}` is configured, and the repository holds nothing of it"
        ))
        .with_hint(hint));
    }
    Ok(())
}

/// The store of `config`'s `[repository]`: with its own credentials when it is a copy's
/// (`DR_COPY_<NAME>_…`, see [`copy::credentials`]), else the AWS chain; wrapped so that
/// every backup object is written under its `object_lock` (see [`immutable`]).
pub async fn open_repository(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    let location = repository_location(config)?;
    let credentials = copy::credentials(&config.repository, |k| std::env::var(k).ok())?;
    let mut store = dr_store::open_with(&location, &credentials).await?;
    if let Some(lock) = location.object_lock() {
        store = Arc::new(immutable::LockingStore::new(store, lock));
    }
    Ok(store)
}

pub fn repository_location(config: &Config) -> Result<dr_store::Location> {
    config.repository.location().map_err(Error::from)
}

/// Human byte sizes for messages.
pub use dr_catalog::human_bytes;
