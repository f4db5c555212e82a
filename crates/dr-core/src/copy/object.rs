//! One stored object from the primary to a copy, as it is (already compressed and encrypted:
//! no identity needed), streamed: the GET body is cut into parts, each part hashed as it
//! passes and uploaded while the next is read; at most three parts are in memory. The
//! object's size and SHA-256 must be what the manifest recorded, or the upload is aborted
//! and nothing is visible in the copy.

use bytes::{Bytes, BytesMut};
use dr_catalog::ObjectRecord;
use dr_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::{Error, Kind, Result};

/// Copy `record`'s object from `from` to `to` under the same key, checked against `record`.
/// An object up to `part_size` is one PUT; a larger one a multipart upload of `part_size`
/// parts (aborted on any failure). Returns the bytes copied.
pub(crate) async fn copy_object(
    from: &dyn ObjectStore,
    to: &dyn ObjectStore,
    record: &ObjectRecord,
    part_size: u64,
    cancel: &CancellationToken,
) -> Result<u64> {
    let key = record.key.as_str();
    let (size, mut reader) = from
        .get_reader(key)
        .await
        .map_err(|e| Error::from(e).context(format!("reading `{key}` from the primary")))?;
    if size != record.bytes {
        return Err(mismatch(
            key,
            format!("{size} bytes stored, the manifest says {}", record.bytes),
        ));
    }
    let part_size = usize::try_from(part_size.max(1)).unwrap_or(usize::MAX);
    if size <= part_size as u64 {
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut body)
            .await
            .map_err(|e| read_failed(key, &e))?;
        check(
            key,
            record,
            body.len() as u64,
            &hex_sha(Sha256::digest(&body)),
        )?;
        if cancel.is_cancelled() {
            return Err(Error::interrupted("the copy"));
        }
        to.put(key, Bytes::from(body))
            .await
            .map_err(|e| Error::from(e).context(format!("writing `{key}` to the copy")))?;
        return Ok(size);
    }

    // Read ahead while parts upload: the next part is read only once the last was taken, and
    // taken only when the upload has room, so an object holds its parts in flight plus one.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let reading = async move {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            let Ok(permit) = tx.reserve().await else {
                return None;
            };
            let mut part = BytesMut::with_capacity(part_size);
            while part.len() < part_size {
                match (&mut reader)
                    .take((part_size - part.len()) as u64)
                    .read_buf(&mut part)
                    .await
                {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        permit.send(Err(e));
                        return None;
                    }
                }
            }
            if part.is_empty() {
                break;
            }
            let last = part.len() < part_size;
            hasher.update(&part);
            total += part.len() as u64;
            permit.send(Ok(part.freeze()));
            if last {
                break;
            }
        }
        Some((total, hex_sha(hasher.finalize())))
    };
    let reader_task = tokio::spawn(reading);
    let mut upload = to.start_multipart(key).await.map_err(|e| {
        Error::from(e).context(format!("starting the upload of `{key}` to the copy"))
    })?;
    let mut failure = None;
    loop {
        if let Err(e) = upload.ready().await {
            failure =
                Some(Error::from(e).context(format!("uploading a part of `{key}` to the copy")));
            break;
        }
        let Some(part) = rx.recv().await else {
            break;
        };
        if cancel.is_cancelled() {
            failure = Some(Error::interrupted("the copy"));
            break;
        }
        match part {
            Ok(p) => {
                if let Err(e) = upload.put_part(p).await {
                    failure = Some(
                        Error::from(e).context(format!("uploading a part of `{key}` to the copy")),
                    );
                    break;
                }
            }
            Err(e) => {
                failure = Some(read_failed(key, &e));
                break;
            }
        }
    }
    drop(rx);
    let read = reader_task.await.ok().flatten();
    let failure = failure.or_else(|| match &read {
        None => Some(Error::new(
            Kind::Failed,
            format!("reading `{key}` from the primary stopped"),
        )),
        Some((n, sha)) => check(key, record, *n, sha).err(),
    });
    if let Some(e) = failure {
        if let Err(ae) = upload.abort().await {
            tracing::error!("could not abort the multipart upload of `{key}` to the copy: {ae}; `dr prune --copy NAME` removes stale uploads");
        }
        return Err(e);
    }
    if let Err(e) = upload.complete().await {
        // The upload is gone from our hands: find it by key, so no part is left billed.
        if let Ok(pending) = to.list_multipart(key).await {
            for p in pending.iter().filter(|p| p.key == key) {
                if let Err(ae) = to.abort_multipart(p).await {
                    tracing::error!("could not abort the multipart upload of `{key}` to the copy: {ae}; `dr prune --copy NAME` removes stale uploads");
                }
            }
        }
        return Err(Error::from(e).context(format!("completing the upload of `{key}` to the copy")));
    }
    Ok(size)
}

fn hex_sha(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes that passed must be the ones the manifest recorded.
fn check(key: &str, record: &ObjectRecord, bytes: u64, sha256: &str) -> Result<()> {
    if bytes != record.bytes {
        return Err(mismatch(
            key,
            format!("read {bytes} bytes, the manifest says {}", record.bytes),
        ));
    }
    if !sha256.eq_ignore_ascii_case(&record.sha256) {
        return Err(mismatch(
            key,
            format!("SHA-256 {sha256}, the manifest says {}", record.sha256),
        ));
    }
    Ok(())
}

fn mismatch(key: &str, what: String) -> Error {
    Error::new(
        Kind::Integrity,
        format!("`{key}` in the primary is not what its manifest recorded ({what}): not copied"),
    )
    .with_hint("the primary's copy of this backup is damaged: run `dr verify` on it; copy the other backups with `dr copy --target`, and keep an older good copy")
}

fn read_failed(key: &str, e: &std::io::Error) -> Error {
    Error::new(
        Kind::Unavailable,
        format!("reading `{key}` from the primary: {e}"),
    )
    .retryable(true)
    .with_hint("run `dr copy` again: it redoes the backup it was copying")
}
