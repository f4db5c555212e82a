//! One section's stream stored as one or more objects ("chunks") of bounded size: parts of
//! one fixed size, at most [`StreamPlan::parts_per_object`] of them per multipart upload;
//! when an object is full it is completed and the stream goes on in the next one
//! (`data-1.zst.age`, `data-1.zst.age.0002`, …). Memory per stream is a few parts at any
//! database size, every object respects the provider's part limit (`[repository.s3]
//! max_parts`) and CopyObject's 5 GiB (`dr undelete`).
//!
//! On any failure the caller calls [`Chunks::abort`]: the upload in progress is aborted; the
//! objects already completed were named in `started` when they began, so the failed run's
//! cleanup deletes them with the rest of the backup (no manifest names them).

use std::io::Write;
use std::sync::Mutex;

use bytes::Bytes;
use dr_catalog::{keys, Chunk};
use dr_store::{MultipartUpload, ObjectStore, StreamPlan};
use dr_stream::HashingWriter;

use crate::{Error, Kind, Result};

/// The object being written: its upload, how many parts it has, the digest so far.
struct Current {
    key: String,
    upload: Box<dyn MultipartUpload>,
    parts: u64,
    hash: HashingWriter<std::io::Sink>,
}

/// One stream's objects. Parts arrive in order through [`Chunks::put_part`]; a full object
/// is completed by [`Chunks::roll_over`] (called before each part, outside any cancellation:
/// a completion cut short would leave its upload behind).
pub(crate) struct Chunks<'a> {
    store: &'a dyn ObjectStore,
    first_key: String,
    plan: StreamPlan,
    current: Option<Current>,
    done: Vec<Chunk>,
    /// Every key after the first, named as its upload starts: the run removes them if the
    /// backup fails anywhere (in this stream or another).
    started: &'a Mutex<Vec<String>>,
}

impl<'a> Chunks<'a> {
    pub(crate) fn new(
        store: &'a dyn ObjectStore,
        first_key: &str,
        plan: StreamPlan,
        started: &'a Mutex<Vec<String>>,
    ) -> Chunks<'a> {
        Chunks {
            store,
            first_key: first_key.to_owned(),
            plan,
            current: None,
            done: Vec::new(),
            started,
        }
    }

    /// Start the first object's upload (before any data: a store that refuses it fails the
    /// section before its pg_dump has done work).
    pub(crate) async fn start(&mut self) -> Result<()> {
        if self.current.is_none() {
            self.begin().await?;
        }
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        let n = self.done.len() + 1;
        let key = if n == 1 {
            self.first_key.clone()
        } else {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let key = keys::chunk(&self.first_key, n);
            self.started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(key.clone());
            key
        };
        let upload = self
            .store
            .start_multipart(&key)
            .await
            .map_err(|e| Error::from(e).context(format!("starting the upload of {key}")))?;
        self.current = Some(Current {
            key,
            upload,
            parts: 0,
            hash: HashingWriter::new(std::io::sink()),
        });
        Ok(())
    }

    /// If the current object is full, complete it and start the next one.
    pub(crate) async fn roll_over(&mut self) -> Result<()> {
        let full = match &self.current {
            Some(c) => c.parts >= self.plan.parts_per_object,
            None => true,
        };
        if full {
            self.complete_current().await?;
            self.begin().await?;
        }
        Ok(())
    }

    /// Wait until the current object's upload takes the next part at once (see
    /// [`dr_store::MultipartUpload::ready`]).
    pub(crate) async fn ready(&mut self) -> Result<()> {
        match self.current.as_mut() {
            Some(c) => {
                let key = &c.key;
                c.upload
                    .ready()
                    .await
                    .map_err(|e| Error::from(e).context(format!("uploading {key}")))
            }
            None => Ok(()),
        }
    }

    /// Upload one part into the current object ([`Chunks::roll_over`] first).
    pub(crate) async fn put_part(&mut self, part: Bytes) -> Result<()> {
        let Some(c) = self.current.as_mut() else {
            return Err(Error::new(
                Kind::Failed,
                format!(
                    "uploading {}: a part came with no upload started",
                    self.first_key
                ),
            ));
        };
        // Off the async threads: ~5 ms for an 8 MiB part.
        let mut hash = std::mem::replace(&mut c.hash, HashingWriter::new(std::io::sink()));
        let data = part.clone();
        c.hash = tokio::task::spawn_blocking(move || {
            let _ = hash.write_all(&data);
            hash
        })
        .await
        .map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("hashing a part of {}: the task failed: {e}", c.key),
            )
        })?;
        c.parts += 1;
        let key = c.key.clone();
        c.upload
            .put_part(part)
            .await
            .map_err(|e| Error::from(e).context(format!("uploading {key}")))
    }

    async fn complete_current(&mut self) -> Result<()> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let meta =
            c.upload.complete().await.map_err(|e| {
                Error::from(e).context(format!("completing the upload of {}", c.key))
            })?;
        let (bytes, sha256, _) = c.hash.finish();
        if meta.size != bytes {
            return Err(Error::new(
                Kind::Integrity,
                format!(
                    "`{}` was uploaded with {bytes} bytes but is stored with {}",
                    c.key, meta.size
                ),
            ));
        }
        tracing::debug!(key = %c.key, bytes, parts = c.parts, "object of a section stored");
        self.done.push(Chunk {
            key: c.key,
            bytes,
            sha256,
        });
        Ok(())
    }

    /// Complete the last object: the stream's objects, in order (an empty stream is one
    /// empty object). They must hold the `encoded` bytes the encoder wrote, together.
    pub(crate) async fn finish(mut self, encoded: u64) -> Result<Vec<Chunk>> {
        if self.current.is_none() && self.done.is_empty() {
            self.begin().await?;
        }
        self.complete_current().await?;
        let done = std::mem::take(&mut self.done);
        let stored: u64 = done.iter().map(|c| c.bytes).sum();
        if stored != encoded {
            return Err(Error::new(
                Kind::Integrity,
                format!(
                    "{}: the encoder wrote {encoded} bytes but {} objects hold {stored}; nothing was committed",
                    self.first_key,
                    done.len()
                ),
            ));
        }
        Ok(done)
    }

    /// Abort the upload in progress. Completed objects stay for the run's cleanup (their
    /// keys are in `started`).
    pub(crate) async fn abort(mut self) {
        if let Some(c) = self.current.take() {
            if let Err(e) = c.upload.abort().await {
                tracing::error!(
                    "could not abort the multipart upload of {}: {e}; `dr prune` removes stale uploads",
                    c.key
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
