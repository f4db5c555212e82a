//! Prefetch for `dr wal fetch --spool DIR` (`docs/design/PITR.md` §3): PostgreSQL asks for
//! one segment at a time and replays it before asking for the next, so recovery would wait
//! for one GET per 16 MiB. After serving NAME, fetch starts a detached worker (`dr wal
//! prefetch`) that downloads the next [`AHEAD`] segments of NAME's timeline, [`JOBS`] at a
//! time, each fully verified by the same path as a fetch, into `DIR/running/` and then
//! renamed into `DIR/`. The next fetch finds its segment there and serves it with a rename
//! (the spool is in `pg_wal`, the same file system as `%p`).
//!
//! - One worker per spool (`DIR/worker.lock`, an exclusive `flock`); a second start exits.
//! - The worker stops at the first segment that is not archived, and never keeps a partial
//!   segment (a segment that may still complete must be asked for again).
//! - Its failures are only logged: the foreground fetch repeats the download and reports.
//! - Segments before NAME are removed from the spool as recovery passes them.

use std::path::{Path, PathBuf};

use dr_catalog::wal::{SegmentName, SegmentSize, WalFile};
use futures::stream::{self, StreamExt};

use super::fetch::{fetch, Fetched, Request};
use crate::{Context, Error, Kind, Result};

/// Segments downloaded ahead of the one served (128 MiB at 16 MiB segments: pgBackRest's
/// `archive-get-queue-max`).
pub const AHEAD: u64 = 8;
/// Downloads at once.
pub const JOBS: usize = 4;

/// `spool/NAME`, if the worker has it: moved to `dest`. `None` when it is not there.
pub fn take(spool: &Path, name: &str, dest: &Path) -> Option<u64> {
    if !matches!(name.parse::<WalFile>(), Ok(WalFile::Segment(_))) {
        return None;
    }
    let from = spool.join(name);
    let len = std::fs::metadata(&from).ok()?.len();
    match std::fs::rename(&from, dest) {
        Ok(()) => Some(len),
        Err(e) => {
            tracing::debug!(
                "prefetched {name} could not be moved to {}: {e}",
                dest.display()
            );
            None
        }
    }
}

/// Remove spool entries of NAME's timeline before NAME: recovery has passed them.
pub fn forget_before(spool: &Path, name: &str) {
    let Ok(WalFile::Segment(served)) = name.parse::<WalFile>() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(Ok(WalFile::Segment(s))) = file.to_str().map(str::parse::<WalFile>) else {
            continue;
        };
        if s.timeline == served.timeline && s < served {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The segments after `name` on its timeline the worker fetches.
pub fn successors(name: &str, size: SegmentSize) -> Vec<SegmentName> {
    let Ok(WalFile::Segment(mut s)) = name.parse::<WalFile>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for _ in 0..AHEAD {
        match s.next(size) {
            Ok(n) => {
                out.push(n);
                s = n;
            }
            Err(_) => break,
        }
    }
    out
}

/// The worker: hold the spool's lock, fetch the successors of `after` not yet in the spool.
pub async fn run(ctx: &Context, target: &str, spool: &Path, after: &str) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        Error::new(Kind::Failed, format!("{what} {}: {e}", spool.display()))
    };
    let running = spool.join("running");
    std::fs::create_dir_all(&running).map_err(|e| fail("creating", e))?;
    let lock = std::fs::File::create(spool.join("worker.lock")).map_err(|e| fail("locking", e))?;
    if lock.try_lock().is_err() {
        return Ok(()); // another worker is at it
    }
    // The archive's segment size (its identity says; 16 MiB if it cannot be read).
    let size = super::identity::read(ctx, target)
        .await
        .ok()
        .flatten()
        .and_then(|i| SegmentSize::new(i.segment_bytes).ok())
        .unwrap_or_default();
    let wanted: Vec<SegmentName> = successors(after, size)
        .into_iter()
        .filter(|s| !spool.join(s.to_string()).exists())
        .collect();
    // In order, JOBS at a time; the first segment not archived ends the run (later ones
    // cannot be archived either, unless a gap, which the foreground fetch reports).
    let results: Vec<(SegmentName, Result<bool>)> = stream::iter(wanted)
        .map(|s| {
            let running = running.clone();
            async move { (s, one(ctx, target, spool, &running, s).await) }
        })
        .buffered(JOBS)
        .collect()
        .await;
    for (s, r) in results {
        match r {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::debug!("prefetching {s}: {}", e.summary());
                break;
            }
        }
    }
    drop(lock);
    Ok(())
}

/// Fetch one segment into the spool; false when it is not archived (or only as a partial).
async fn one(
    ctx: &Context,
    target: &str,
    spool: &Path,
    running: &Path,
    s: SegmentName,
) -> Result<bool> {
    let name = s.to_string();
    let tmp: PathBuf = running.join(&name);
    match fetch(ctx, &Request::new(target, &name, &tmp)).await? {
        Fetched::Written(served) if !served.is_partial() => {
            std::fs::rename(&tmp, spool.join(&name)).map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!("moving {} into the spool: {e}", tmp.display()),
                )
            })?;
            Ok(true)
        }
        Fetched::Written(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(false)
        }
        Fetched::NotFound => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_fetches_the_next_segments_of_the_timeline() {
        let next = successors("0000000200000001000000FE", SegmentSize::default());
        let names: Vec<String> = next.iter().map(ToString::to_string).collect();
        assert_eq!(names.len(), AHEAD as usize);
        assert_eq!(names[0], "0000000200000001000000FF");
        assert_eq!(names[1], "000000020000000200000000");
        assert!(successors("00000002.history", SegmentSize::default()).is_empty());
    }

    #[test]
    fn served_and_passed_segments_leave_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [
            "000000010000000000000003",
            "000000010000000000000004",
            "000000020000000000000002",
            "worker.lock",
        ] {
            std::fs::write(dir.path().join(n), b"x").expect("write");
        }
        let dest = dir.path().join("RECOVERYXLOG");
        assert_eq!(take(dir.path(), "000000010000000000000004", &dest), Some(1));
        assert!(dest.exists());
        assert_eq!(take(dir.path(), "000000010000000000000005", &dest), None);
        assert_eq!(take(dir.path(), "worker.lock", &dest), None);
        forget_before(dir.path(), "000000010000000000000005");
        assert!(!dir.path().join("000000010000000000000003").exists());
        assert!(
            dir.path().join("000000020000000000000002").exists(),
            "another timeline"
        );
        assert!(dir.path().join("worker.lock").exists());
    }
}
