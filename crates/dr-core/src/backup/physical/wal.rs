//! The WAL a base backup needs, waited for in the repository before its commit: the
//! record of every segment from its start to its stop segment (`docs/design/PITR.md`, trap
//! 8). One function, [`wait_for_wal`], whatever archives the WAL (`dr wal push` from
//! `archive_command`, or `dr wal stream`).

use std::time::{Duration, Instant};

use dr_catalog::wal::{keys as wal_keys, Lsn, SegmentName, SegmentSize, WalFile};
use dr_store::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::{Error, Kind, Result};

/// What a timeout says to do.
pub const NOT_ARCHIVED_HINT: &str = "WAL is not being archived for this target: check archive_command (`dr check`) or run `dr wal stream`";

/// The last segment a backup stopping at `stop` needs: the one holding the byte before
/// `stop` (PostgreSQL's `XLByteToPrevSeg` in `do_pg_backup_stop`): a stop exactly at a
/// segment boundary needs nothing of the next segment, which is not complete yet.
pub fn stop_segment(timeline: u32, start: Lsn, stop: Lsn, size: SegmentSize) -> SegmentName {
    let last_byte = if stop > start { Lsn(stop.0 - 1) } else { start };
    SegmentName::of(timeline, last_byte, size)
}

/// Wait until the record of every segment from `first` to `last` (same timeline) is in the
/// repository: the commit point of each archived segment (`dr wal push` / `dr wal stream`).
/// Polls up to `wait`, first every 100 ms then less often, up to once a second (in stream
/// mode the stop segment lands a moment after pg_basebackup ends: a whole second would be
/// most of a small backup's time); a timeout is exit 3 naming the first missing segment.
pub async fn wait_for_wal(
    store: &dyn ObjectStore,
    target: &str,
    first: SegmentName,
    last: SegmentName,
    size: SegmentSize,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<()> {
    let deadline = Instant::now() + wait;
    let mut next = first;
    let mut every = Duration::from_millis(100);
    loop {
        // Segments before `next` are there; records are never removed while a backup runs.
        loop {
            let key = wal_keys::record(target, WalFile::Segment(next));
            let found = store
                .head(&key)
                .await
                .map_err(|e| Error::from(e).context(format!("looking for WAL record `{key}`")))?;
            if found.is_none() {
                break;
            }
            if next >= last {
                return Ok(());
            }
            next = next
                .next(size)
                .map_err(|e| Error::new(Kind::Failed, e.to_string()))?;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(not_archived(target, first, last, next, wait));
        }
        let pause = (deadline - now).min(every);
        every = (every * 2).min(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Err(Error::interrupted("the backup")),
        }
    }
}

fn not_archived(
    target: &str,
    first: SegmentName,
    last: SegmentName,
    missing: SegmentName,
    wait: Duration,
) -> Error {
    let range = if first == last {
        format!("segment {first}")
    } else {
        format!("segments {first}..{last}")
    };
    Error::new(
        Kind::Unavailable,
        format!(
            "WAL segment {missing} is not in the repository after {}s (the base backup needs {range} of target `{target}`); the backup was not committed",
            wait.as_secs()
        ),
    )
    .with_hint(NOT_ARCHIVED_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dr_store::MemoryStore;

    fn seg(s: &str) -> SegmentName {
        s.parse().expect("segment")
    }

    #[test]
    fn the_stop_segment_is_the_one_before_a_boundary() {
        let size = SegmentSize::DEFAULT;
        let lsn = |s: &str| s.parse::<Lsn>().expect("lsn");
        assert_eq!(
            stop_segment(1, lsn("0/2000028"), lsn("0/2000100"), size),
            seg("000000010000000000000002")
        );
        // Stopping exactly at 0/3000000 needs nothing of segment 3.
        assert_eq!(
            stop_segment(1, lsn("0/2000028"), lsn("0/3000000"), size),
            seg("000000010000000000000002")
        );
        assert_eq!(
            stop_segment(2, lsn("0/2000028"), lsn("1/00000028"), size),
            seg("000000020000000100000000")
        );
    }

    async fn put_record(store: &MemoryStore, s: &str) {
        store
            .put(
                &wal_keys::record("app", WalFile::Segment(seg(s))),
                Bytes::from_static(b"r"),
            )
            .await
            .expect("put");
    }

    #[tokio::test]
    async fn the_wait_ends_when_every_record_is_there_and_names_the_first_missing() {
        let store = MemoryStore::new();
        let size = SegmentSize::DEFAULT;
        let cancel = CancellationToken::new();
        let (first, last) = (
            seg("0000000100000000000000FF"),
            seg("000000010000000100000001"),
        );
        put_record(&store, "0000000100000000000000FF").await;
        put_record(&store, "000000010000000100000001").await;
        let e = wait_for_wal(
            &store,
            "app",
            first,
            last,
            size,
            Duration::from_millis(10),
            &cancel,
        )
        .await
        .expect_err("a hole");
        assert_eq!(e.kind, Kind::Unavailable);
        assert!(e.message.contains("000000010000000100000000"), "{e}");
        assert!(
            e.hint
                .as_deref()
                .is_some_and(|h| h.contains("archive_command")),
            "{e}"
        );
        // The record arrives while dr waits.
        let late = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            put_record(&store, "000000010000000100000000").await;
        };
        let (waited, ()) = tokio::join!(
            wait_for_wal(
                &store,
                "app",
                first,
                last,
                size,
                Duration::from_secs(5),
                &cancel
            ),
            late
        );
        waited.expect("complete");
    }
}
