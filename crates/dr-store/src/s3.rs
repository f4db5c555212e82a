//! The S3 store: any S3-compatible service through aws-sdk-s3.
//!
//! Configured for the lowest common denominator of S3 implementations (R2, MinIO, SeaweedFS):
//! checksums only when an operation requires them, path-style addressing on request, and
//! stalled-stream protection with a 120 s grace period in both directions (downloads are decoded
//! into a local file at full speed, never paced by `pg_restore`).
//!
//! This file owns the store's object operations (put, head, list, delete, multipart
//! listing); the client's construction is in `client`, error shaping in `errors`, Object Lock
//! and versions in `lock`, one multipart upload in `multipart`, the location and options in
//! `options`, reads that resume where a download broke off in `read`.

use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::location::{invalid, invalid_option, options_from, Backend};
use crate::{
    validate_key, validate_prefix, Location, MultipartUpload, ObjectMeta, ObjectStore, PartLimits,
    PendingUpload, RepositoryOptions, Retention, StoreError,
};

mod client;
mod errors;
mod lock;
mod multipart;
mod options;
mod read;

use errors::is_not_found;
use lock::{content_md5, to_smithy};
use multipart::{abort_upload, S3Upload};
pub use options::S3Options;
pub(crate) use options::BACKEND;

/// Parts uploaded concurrently by one multipart upload.
const MAX_PARTS_IN_FLIGHT: usize = 2;

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

/// What the store and its uploads share.
struct Shared {
    client: Client,
    bucket: String,
    /// No leading or trailing '/'; may be empty.
    prefix: String,
    /// Shown in hints about unreachable endpoints; without userinfo.
    endpoint: Option<String>,
}

impl Shared {
    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The repository prefix as a key prefix: "" or "prefix/".
    fn root(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn target(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }
}

fn to_chrono(t: Option<&aws_smithy_types::DateTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

pub(crate) struct S3Store {
    location: Location,
    shared: Arc<Shared>,
    /// How a download that broke off is resumed (`read`).
    read_policy: dr_retry::Policy,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location.to_string())
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// PutObject, with Object Lock retention (and the Content-MD5 that S3 requires with it)
    /// when given. Without retention no checksum is sent (R2 rejects some of them).
    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        let s = &self.shared;
        let full = s.full_key(key);
        let mut req = s.client.put_object().bucket(&s.bucket).key(&full);
        if let Some(r) = retention {
            req = req
                .object_lock_mode(lock::mode(r.mode))
                .object_lock_retain_until_date(to_smithy(r.until))
                .content_md5(content_md5(&body));
        }
        req.body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s.error("PutObject", &full, &e))?;
        Ok(())
    }

    async fn put_object_if_absent(
        &self,
        key: &str,
        body: Bytes,
        retention: Option<&Retention>,
    ) -> Result<bool, StoreError> {
        validate_key(key)?;
        let s = &self.shared;
        let full = s.full_key(key);
        let md5 = retention.map(|_| content_md5(&body));
        let (full, body, md5) = (&full, &body, &md5);
        let attempt = || async move {
            let mut req = s
                .client
                .put_object()
                .bucket(&s.bucket)
                .key(full)
                .if_none_match("*");
            if let (Some(r), Some(md5)) = (retention, md5) {
                req = req
                    .object_lock_mode(lock::mode(r.mode))
                    .object_lock_retain_until_date(to_smithy(r.until))
                    .content_md5(md5);
            }
            let err = match req.body(ByteStream::from(body.clone())).send().await {
                Ok(_) => return Ok(true),
                Err(err) => err,
            };
            let status = err.raw_response().map(|r| r.status().as_u16());
            if err.code() == Some("PreconditionFailed") || status == Some(412) {
                return Ok(false);
            }
            Err(s.error("PutObject (If-None-Match)", full, &err))
        };
        // AWS: a concurrent conditional write to the same key is in progress; retry.
        dr_retry::S3_WRITE_CONFLICT
            .run(
                "conditional PutObject",
                None,
                StoreError::is_write_conflict,
                attempt,
            )
            .await
    }

    /// CreateMultipartUpload, with the retention on the request itself when given: the
    /// completed object is locked from its first moment.
    async fn create_multipart(
        &self,
        key: &str,
        retention: Option<Retention>,
    ) -> Result<Box<dyn MultipartUpload>, StoreError> {
        validate_key(key)?;
        let s = &self.shared;
        let full = s.full_key(key);
        let mut req = s
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(&full);
        if let Some(r) = &retention {
            req = req
                .object_lock_mode(lock::mode(r.mode))
                .object_lock_retain_until_date(to_smithy(r.until));
        }
        let out = req
            .send()
            .await
            .map_err(|e| s.error("CreateMultipartUpload", &full, &e))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| {
                s.protocol_error("CreateMultipartUpload", &full, "the answer has no UploadId")
            })?
            .to_owned();
        tracing::debug!(target = %s.target(&full), %upload_id, "multipart upload started");
        Ok(Box::new(S3Upload {
            shared: Arc::clone(&self.shared),
            key: key.to_owned(),
            full_key: full,
            upload_id,
            retention,
            next_part: 1,
            max_parts: i32::try_from(self.part_limits().max_parts).unwrap_or(i32::MAX),
            in_flight: JoinSet::new(),
            parts: Vec::new(),
            size: 0,
            finished: false,
        }))
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> &Location {
        &self.location
    }

    fn part_limits(&self) -> PartLimits {
        match &self.location {
            Location::S3 { max_parts, .. } => PartLimits::S3.with_max_parts(*max_parts),
            Location::Directory { .. } => PartLimits::S3,
        }
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_object(key, body, None).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.put_object_if_absent(key, body, None).await
    }

    async fn put_locked(
        &self,
        key: &str,
        body: Bytes,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.put_object(key, body, Some(retention)).await
    }

    async fn put_if_absent_locked(
        &self,
        key: &str,
        body: Bytes,
        retention: &Retention,
    ) -> Result<bool, StoreError> {
        self.put_object_if_absent(key, body, Some(retention)).await
    }

    async fn start_multipart_locked(
        &self,
        key: &str,
        retention: &Retention,
    ) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.create_multipart(key, Some(*retention)).await
    }

    async fn lock_state(&self) -> Result<crate::BucketLockState, StoreError> {
        lock::lock_state(&self.shared).await
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<crate::ObjectVersion>, StoreError> {
        validate_prefix(prefix)?;
        lock::list_versions(&self.shared, prefix).await
    }

    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, StoreError> {
        validate_key(key)?;
        lock::version_retention(&self.shared, key, version_id).await
    }

    async fn set_version_retention(
        &self,
        key: &str,
        version_id: &str,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        lock::set_version_retention(&self.shared, key, version_id, retention).await
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        lock::delete_version(&self.shared, key, version_id).await
    }

    async fn copy_version(
        &self,
        key: &str,
        version_id: &str,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        lock::copy_version(&self.shared, key, version_id, retention).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.read_all(key).await
    }

    async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>), StoreError> {
        let reader = self.reader(key).await?;
        Ok((reader.size(), Box::new(reader)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        validate_key(key)?;
        let s = &self.shared;
        let full = s.full_key(key);
        match s
            .client
            .head_object()
            .bucket(&s.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                last_modified: to_chrono(out.last_modified()),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s.error("HeadObject", &full, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let s = &self.shared;
        let root = s.root();
        let full_prefix = format!("{root}{prefix}");
        let mut pages = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s.error("ListObjectsV2", &full_prefix, &e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(key) = full.strip_prefix(&root) else {
                    continue;
                };
                // Folder markers some services create; never a dr object.
                if key.is_empty() || key.ends_with('/') {
                    continue;
                }
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    last_modified: to_chrono(object.last_modified()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let s = &self.shared;
        let full = s.full_key(key);
        match s
            .client
            .delete_object()
            .bucket(&s.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(s.error("DeleteObject", &full, &e)),
        }
    }

    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.create_multipart(key, None).await
    }

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        validate_prefix(prefix)?;
        let s = &self.shared;
        let root = s.root();
        let full_prefix = format!("{root}{prefix}");
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let page = s
                .client
                .list_multipart_uploads()
                .bucket(&s.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|e| s.error("ListMultipartUploads", &full_prefix, &e))?;
            for upload in page.uploads() {
                let (Some(full), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(key) = full.strip_prefix(&root) else {
                    continue;
                };
                if !key.starts_with(prefix) {
                    continue;
                }
                out.push(PendingUpload {
                    key: key.to_owned(),
                    upload_id: id.to_owned(),
                    initiated: to_chrono(upload.initiated()),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_id_marker.is_none() {
                return Err(s.protocol_error(
                    "ListMultipartUploads",
                    &full_prefix,
                    "the listing is truncated but has no next marker; refusing to return a partial listing",
                ));
            }
        }
        out.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(out)
    }

    async fn abort_multipart(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        validate_key(&upload.key)?;
        let full = self.shared.full_key(&upload.key);
        abort_upload(&self.shared, &full, &upload.upload_id).await
    }
}
