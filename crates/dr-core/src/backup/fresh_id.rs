//! A backup id nobody used: ids have one-second resolution, so a backup right after another
//! waits for a fresh second, and never writes into the prefix of a committed backup (clock
//! stepped back, or a twin run).

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId};

use crate::{Context, Error, Kind, Result};

/// `started_at` and its id, or a later second's when that id is taken.
pub(super) async fn choose(
    ctx: &Context,
    target: &str,
    started_at: DateTime<Utc>,
) -> Result<(DateTime<Utc>, BackupId)> {
    let mut first = Some(started_at);
    let fresh = || {
        let at = first.take().unwrap_or_else(Utc::now);
        async move {
            let id = BackupId::from_time(at);
            match ctx.store.head(&keys::manifest(target, &id)).await {
                Ok(None) => Ok((at, id)),
                Ok(Some(_)) => Err(IdTaken::Taken(id)),
                Err(e) => Err(IdTaken::Store(e.into())),
            }
        }
    };
    let taken = |e: &IdTaken| matches!(e, IdTaken::Taken(_));
    let chosen = dr_retry::FRESH_BACKUP_ID
        .run(
            "choosing a fresh backup id",
            Some(&ctx.cancel),
            taken,
            fresh,
        )
        .await;
    match chosen {
        Ok(fresh) => Ok(fresh),
        Err(IdTaken::Store(e)) => Err(e),
        Err(IdTaken::Taken(id)) => Err(Error::new(
            Kind::Failed,
            format!("backup {id} of `{target}` already exists and the clock does not move on"),
        )
        .with_hint("check the system clock (NTP)")),
    }
}

/// Why a backup id could not be used: taken by a committed backup (wait for the clock), or
/// the repository could not say.
enum IdTaken {
    Taken(BackupId),
    Store(Error),
}

impl std::fmt::Display for IdTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdTaken::Taken(id) => write!(f, "backup {id} already exists"),
            IdTaken::Store(e) => e.fmt(f),
        }
    }
}
