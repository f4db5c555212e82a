//! The growing segment off the host: `{SEG}.partial` uploaded as a new data object, then its
//! record `{SEG}.partial.rec` replaced (a plain PUT: unlike every other record it changes
//! while the segment grows), then the object the old record named deleted. A crash between
//! the two leaves an orphan data object that prune removes; the record always names a
//! complete object. Once the segment completes and is archived, both go.
//!
//! The record's `end_lsn` is where the valid pages end when the upload starts
//! ([`dr_pg::WalHeader::written_end`]): the object holds at least that much.

use std::path::Path;

use bytes::Bytes;
use dr_catalog::wal::{join, keys, split, Lsn, SegmentName, WalFile};
use dr_pg::WalHeader;

use crate::wal::push::{discard, store, Piece, Source};
use crate::wal::retrying;
use crate::{Context, Error, Result};

/// A partial uploaded: the end it holds and the object its record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) segment: SegmentName,
    pub(crate) end: Lsn,
    pub(crate) key: String,
}

/// Upload the partial at `path` holding WAL up to `end`; `ended` for a timeline's last
/// segment, which never grows again.
pub(crate) async fn send(
    ctx: &Context,
    target: &str,
    path: &Path,
    header: WalHeader,
    end: Lsn,
    ended: bool,
) -> Result<Sent> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<WalFile>().ok());
    let (file, segment) = match name {
        Some(f @ WalFile::Partial(s)) => (f, s),
        _ => {
            return Err(Error::config(format!(
                "{} is not a partial WAL segment",
                path.display()
            )))
        }
    };
    let record_key = keys::record(target, file);
    let previous = current_key(ctx, &record_key).await?;
    let piece = Piece {
        path,
        file,
        header: Some(header),
        target,
        source: Source::Stream,
        end_lsn: Some(end),
        r#final: ended,
    };
    let record = store(ctx, &piece).await?;
    let document = record.document();
    let signature = ctx.signing.sign(&document)?;
    let body = Bytes::from(join(&document, signature.as_deref()));
    let put = retrying(ctx, &format!("writing {record_key}"), || async {
        ctx.store
            .put(&record_key, body.clone())
            .await
            .map_err(|e| Error::from(e).context(format!("writing {record_key}")))
    })
    .await;
    if let Err(e) = put {
        discard(ctx, &record.key).await;
        return Err(e);
    }
    if let Some(old) = previous.filter(|k| *k != record.key) {
        discard(ctx, &old).await;
    }
    Ok(Sent {
        segment,
        end,
        key: record.key,
    })
}

/// The segment is archived whole: its partial's record, then the object it names, go.
/// Failures are logged: a partial behind a complete segment is never used.
pub(crate) async fn retire(ctx: &Context, target: &str, segment: SegmentName) {
    let record_key = keys::record(target, WalFile::Partial(segment));
    let key = match current_key(ctx, &record_key).await {
        Ok(Some(k)) => k,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("could not read {record_key} to remove it: {}", e.summary());
            return;
        }
    };
    let deleted = retrying(ctx, &format!("deleting {record_key}"), || async {
        ctx.store.delete(&record_key).await.map_err(Error::from)
    })
    .await;
    match deleted {
        Ok(()) => discard(ctx, &key).await,
        Err(e) => tracing::warn!(
            "could not delete {record_key} ({segment} is archived whole, so it is not used): {}",
            e.summary()
        ),
    }
}

/// The data object the record at `record_key` names, if there is a readable record.
async fn current_key(ctx: &Context, record_key: &str) -> Result<Option<String>> {
    let stored = retrying(ctx, &format!("reading {record_key}"), || async {
        match ctx.store.get(record_key).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::from(e).context(format!("reading {record_key}"))),
        }
    })
    .await?;
    Ok(stored.and_then(|b| split(record_key, &b).ok().map(|(r, _, _)| r.key)))
}

/// The partial's header, or `None` while pg_receivewal has not written its first page yet.
pub(crate) async fn header(path: &Path, file: WalFile) -> Option<WalHeader> {
    crate::wal::push::read_header(path, file).await.ok()
}
