//! One WAL file into one data object: read once, raw SHA-256 while zstd → age → SHA-256,
//! uploaded in one PUT or, above one part, a multipart upload that is completed only once
//! the encoder finished. Nothing is left at the key on failure.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use dr_stream::{Compression, HashingReader, Recipients};
use tokio::sync::mpsc::Receiver;

use super::push::read_error;
use crate::{Context, Error, Kind, Result};

/// Sizes and digests of one uploaded data object.
pub(crate) struct Stored {
    pub(crate) raw_bytes: u64,
    pub(crate) raw_sha256: String,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

/// The file being read, hashed as it is read, shared with the encoding thread so its digest
/// can be taken once the thread is done.
#[derive(Clone)]
struct Hashed(Arc<Mutex<Option<HashingReader<std::fs::File>>>>);

impl std::io::Read for Hashed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

impl Hashed {
    fn finish(&self) -> (u64, String) {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        guard.take().map(HashingReader::finish).unwrap_or_default()
    }
}

/// Read `path` once: raw SHA-256, zstd, age, SHA-256, uploaded to `key` (one PUT, or a
/// multipart upload above one part). Nothing is left at `key` on failure.
pub(crate) async fn upload(
    ctx: &Context,
    path: &Path,
    key: &str,
    recipients: &Arc<Recipients>,
) -> Result<Stored> {
    let file = std::fs::File::open(path).map_err(|e| read_error(path, &e))?;
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let hashed = Hashed(Arc::new(Mutex::new(Some(HashingReader::new(file)))));
    let compression = Compression {
        level: ctx.config.backup.zstd_level,
        threads: 0,
    };
    // 8 MiB parts: a 16 MiB segment is one PUT, unless it does not compress. Larger parts
    // where `[repository.s3] max_parts` is tiny, so that the file fits in them.
    let part_size = ctx.store.part_limits().part_size_for(file_bytes, None);
    let (mut rx, encoding) = dr_stream::encode_into_parts(
        hashed.clone(),
        Arc::clone(recipients),
        compression,
        part_size,
        |_| {},
    );
    let first = rx.recv().await;
    let second = match first {
        Some(_) => rx.recv().await,
        None => None,
    };
    let encoded = match (first, second) {
        (Some(only), None) => {
            // The encoder is done (its channel closed): only a complete object is stored.
            let encoded = encoding.finish().await.map_err(|e| encode_error(e, path))?;
            ctx.store
                .put(key, only)
                .await
                .map_err(|e| Error::from(e).context(format!("uploading {key}")))?;
            encoded
        }
        (Some(a), Some(b)) => multipart(ctx, key, [a, b], rx, encoding, path).await?,
        (None, _) => {
            let e = encoding.finish().await.err();
            return Err(match e {
                Some(e) => encode_error(e, path),
                None => Error::new(
                    Kind::Failed,
                    format!("encoding {} produced nothing", path.display()),
                ),
            });
        }
    };
    let (raw_bytes, raw_sha256) = hashed.finish();
    Ok(Stored {
        raw_bytes,
        raw_sha256,
        bytes: encoded.stats.stored_bytes,
        sha256: encoded.stats.sha256,
    })
}

fn encode_error(e: dr_stream::StreamError, path: &Path) -> Error {
    Error::from(e).context(format!("compressing and encrypting {}", path.display()))
}

/// The parts as they come; completed only once the encoder finished without error.
async fn multipart(
    ctx: &Context,
    key: &str,
    first: [Bytes; 2],
    mut rx: Receiver<Bytes>,
    encoding: dr_stream::Encoding,
    path: &Path,
) -> Result<dr_stream::EncodedParts> {
    let mut upload = ctx
        .store
        .start_multipart(key)
        .await
        .map_err(|e| Error::from(e).context(format!("starting the upload of {key}")))?;
    let mut failed = None;
    let mut pending = first.into_iter().collect::<std::collections::VecDeque<_>>();
    loop {
        let part = match pending.pop_front() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        if let Err(e) = upload.put_part(part).await {
            failed = Some(Error::from(e).context(format!("uploading {key}")));
            break;
        }
    }
    drop(rx);
    let encoded = encoding.finish().await;
    let outcome = match (failed, encoded) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(encode_error(e, path)),
        (None, Ok(v)) => Ok(v),
    };
    match outcome {
        Ok(v) => {
            upload
                .complete()
                .await
                .map_err(|e| Error::from(e).context(format!("completing the upload of {key}")))?;
            Ok(v)
        }
        Err(e) => {
            if let Err(ae) = upload.abort().await {
                tracing::warn!("could not abort the multipart upload of {key}: {ae}; `dr prune` removes stale uploads");
            }
            Err(e)
        }
    }
}
