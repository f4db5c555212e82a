//! Stopping every stream of a sectioned restore at its first failure, and saying why.

use std::sync::{Arc, Mutex};

use dr_pg::ConnInfo;
use tokio_util::sync::CancellationToken;

use crate::{Context, Error, Kind};

/// The first failure of any stream, and the token that stops them all.
#[derive(Clone)]
pub(super) struct Stopper {
    pub(super) token: CancellationToken,
    first: Arc<Mutex<Option<Error>>>,
}

impl Stopper {
    pub(super) fn new(parent: &CancellationToken) -> Stopper {
        Stopper {
            token: parent.child_token(),
            first: Arc::new(Mutex::new(None)),
        }
    }

    /// Record `e` (unless a failure was recorded before it) and stop every stream.
    pub(super) fn fail(&self, e: Error) {
        if let Ok(mut f) = self.first.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        self.token.cancel();
    }

    /// Why the streams were stopped, if they were.
    pub(super) fn failure(&self, ctx: &Context, conn: &ConnInfo) -> Option<Error> {
        if !self.token.is_cancelled() {
            return None;
        }
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        // A signal (SIGTERM to the whole cgroup reaches pg_restore too, which may then exit
        // before dr stops it) is an interruption, whatever a child reported on the way.
        if ctx.cancel.is_cancelled() {
            let mut e = Error::new(
                Kind::Interrupted,
                format!("the restore into {conn} was interrupted by a signal; every pg_restore and its workers were stopped"),
            );
            if let Some(f) = first.filter(|f| f.kind != Kind::Interrupted) {
                e.details.push(format!("meanwhile: {}", f.summary()));
            }
            return Some(e);
        }
        Some(first.unwrap_or_else(|| {
            Error::new(Kind::Failed, format!("the restore into {conn} was stopped"))
        }))
    }
}
