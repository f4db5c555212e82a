//! One S3 multipart upload: equal-size parts, a bounded number in flight, completed in
//! order, aborted on every error path (and said loudly if dropped unfinished).

use super::*;

pub(super) async fn abort_upload(
    s: &Shared,
    full_key: &str,
    upload_id: &str,
) -> Result<(), StoreError> {
    match s
        .client
        .abort_multipart_upload()
        .bucket(&s.bucket)
        .key(full_key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(s.error("AbortMultipartUpload", full_key, &e)),
    }
}

pub(super) struct S3Upload {
    pub(super) shared: Arc<Shared>,
    pub(super) key: String,
    pub(super) full_key: String,
    pub(super) upload_id: String,
    /// Set on CreateMultipartUpload; parts then carry Content-MD5 (S3 requires it with
    /// Object Lock), and an empty object is written with it.
    pub(super) retention: Option<Retention>,
    pub(super) next_part: i32,
    /// `[repository.s3] max_parts`: a part past it is refused here, not by the service
    /// after the upload of everything before it.
    pub(super) max_parts: i32,
    pub(super) in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    /// Finished parts, in completion order (sorted before CompleteMultipartUpload).
    pub(super) parts: Vec<CompletedPart>,
    pub(super) size: u64,
    /// Completed or aborted: nothing left on the server.
    pub(super) finished: bool,
}

impl S3Upload {
    fn record(
        &mut self,
        joined: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        match joined {
            Ok(Ok(part)) => {
                self.parts.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(join) => Err(self.shared.protocol_error(
                "UploadPart",
                &self.full_key,
                format!("the upload task failed: {join}"),
            )),
        }
    }

    /// Wait until at most `limit` parts are in flight.
    async fn drain_to(&mut self, limit: usize) -> Result<(), StoreError> {
        while self.in_flight.len() > limit {
            match self.in_flight.join_next().await {
                Some(joined) => self.record(joined)?,
                None => break,
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<ObjectMeta, StoreError> {
        self.drain_to(0).await?;
        let s = Arc::clone(&self.shared);
        if self.parts.is_empty() {
            // S3 rejects completing an upload without parts: store an empty object instead.
            abort_upload(&s, &self.full_key, &self.upload_id).await?;
            self.finished = true;
            let mut req = s.client.put_object().bucket(&s.bucket).key(&self.full_key);
            if let Some(r) = &self.retention {
                req = req
                    .object_lock_mode(super::lock::mode(r.mode))
                    .object_lock_retain_until_date(to_smithy(r.until))
                    .content_md5(content_md5(&[]));
            }
            req.body(ByteStream::from(Bytes::new()))
                .send()
                .await
                .map_err(|e| s.error("PutObject", &self.full_key, &e))?;
        } else {
            self.parts.sort_by_key(|p| p.part_number());
            let parts = CompletedMultipartUpload::builder()
                .set_parts(Some(std::mem::take(&mut self.parts)))
                .build();
            s.client
                .complete_multipart_upload()
                .bucket(&s.bucket)
                .key(&self.full_key)
                .upload_id(&self.upload_id)
                .multipart_upload(parts)
                .send()
                .await
                .map_err(|e| s.error("CompleteMultipartUpload", &self.full_key, &e))?;
            self.finished = true;
        }
        let head = s
            .client
            .head_object()
            .bucket(&s.bucket)
            .key(&self.full_key)
            .send()
            .await
            .map_err(|e| s.error("HeadObject", &self.full_key, &e))?;
        let size = head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        if size != self.size {
            return Err(StoreError::Mismatch {
                key: self.key.clone(),
                location: s.target(&self.full_key),
                detail: format!("uploaded {} bytes, the object has {size}", self.size),
            });
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size,
            last_modified: to_chrono(head.last_modified()),
        })
    }

    async fn abort_in_place(&mut self) -> Result<(), StoreError> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if self.finished {
            return Ok(());
        }
        abort_upload(&self.shared, &self.full_key, &self.upload_id).await?;
        self.finished = true;
        Ok(())
    }
}

#[async_trait::async_trait]
impl MultipartUpload for S3Upload {
    async fn ready(&mut self) -> Result<(), StoreError> {
        // Surface failures of earlier parts as early as possible.
        while let Some(joined) = self.in_flight.try_join_next() {
            self.record(joined)?;
        }
        self.drain_to(MAX_PARTS_IN_FLIGHT - 1).await
    }

    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        if self.finished {
            return Err(self.shared.protocol_error(
                "UploadPart",
                &self.full_key,
                "the upload is already completed or aborted",
            ));
        }
        self.ready().await?;
        if self.next_part > self.max_parts {
            return Err(self.shared.protocol_error(
                "UploadPart",
                &self.full_key,
                format!(
                    "more than {} parts ([repository.s3] max_parts); the part size is too small for this object",
                    self.max_parts
                ),
            ));
        }
        let part_number = self.next_part;
        self.next_part += 1;
        self.size += data.len() as u64;
        let shared = Arc::clone(&self.shared);
        let (full_key, upload_id) = (self.full_key.clone(), self.upload_id.clone());
        let locked = self.retention.is_some();
        self.in_flight.spawn(async move {
            let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
            let mut req = shared
                .client
                .upload_part()
                .bucket(&shared.bucket)
                .key(&full_key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .content_length(len);
            if locked {
                // ~0.2 s for a 64 MiB part: off the async threads.
                let part = data.clone();
                let md5 = tokio::task::spawn_blocking(move || content_md5(&part))
                    .await
                    .map_err(|e| {
                        shared.protocol_error(
                            "UploadPart",
                            &full_key,
                            format!("part {part_number}: computing Content-MD5 failed: {e}"),
                        )
                    })?;
                req = req.content_md5(md5);
            }
            let out = req
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| shared.error("UploadPart", &full_key, &e))?;
            let e_tag = out.e_tag().ok_or_else(|| {
                shared.protocol_error(
                    "UploadPart",
                    &full_key,
                    format!("part {part_number}: the answer has no ETag"),
                )
            })?;
            Ok(CompletedPart::builder()
                .part_number(part_number)
                .e_tag(e_tag)
                .build())
        });
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        match self.finish().await {
            Ok(meta) => Ok(meta),
            Err(err) => {
                // The caller cannot abort a consumed upload: clean up here.
                if let Err(abort) = self.abort_in_place().await {
                    tracing::warn!(
                        key = %self.key,
                        upload_id = %self.upload_id,
                        error = %abort,
                        "could not abort the failed multipart upload; it stays until aborted"
                    );
                }
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.abort_in_place().await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if !self.finished {
            tracing::warn!(
                target = %self.shared.target(&self.full_key),
                upload_id = %self.upload_id,
                "multipart upload dropped without complete() or abort(); its parts stay in the bucket until aborted"
            );
        }
    }
}
