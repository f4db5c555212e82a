//! Continuous WAL archiving (`docs/design/PITR.md`): each WAL file PostgreSQL completes is
//! stored under its target's `wal/` prefix as `age(zstd(raw))` under a random name, with a
//! signed record created only if absent as its commit point ([`push`]); which cluster a
//! target's archive belongs to is its [`identity`].
//!
//! `dr wal stream` receives it over replication instead ([`stream`]).
//!
//! `restore_command` reads it back ([`fetch`]); the restore plan, status and prune read every
//! record at once ([`catalog`]).
//!
//! No run lock: two pushers of one file are safe because only one record can be created, and
//! the other compares digests (same bytes: fine; different: refused, never overwritten).

pub mod catalog;
pub mod fetch;
pub mod identity;
pub mod prefetch;
pub mod push;
pub mod stream;
mod upload;

use std::future::Future;

use dr_config::TargetConfig;

use crate::{Context, Error, Result};

/// The targets with `[targets.wal]`, in config order.
pub fn wal_targets(ctx: &Context) -> Vec<&TargetConfig> {
    ctx.config
        .targets
        .iter()
        .filter(|t| t.wal.is_some())
        .collect()
}

/// Run a store request with [`dr_retry::WAL_PUSH`]: tried again while the failure is
/// transient, stopped by a signal.
pub(crate) async fn retrying<T, F, Fut>(ctx: &Context, what: &str, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    dr_retry::WAL_PUSH
        .run(what, Some(&ctx.cancel), |e: &Error| e.retryable, op)
        .await
}

/// 16 random hex digits: the `N` of a data object's name, so two pushers' objects differ.
pub(crate) fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}
