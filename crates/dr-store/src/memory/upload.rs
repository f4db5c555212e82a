//! One multipart upload to the memory store.

use bytes::Bytes;

use super::{md5_hex, meta, write_version, MemoryStore};
use crate::{MultipartUpload, ObjectMeta, ObjectStore, StoreError};

/// An upload in progress: its parts live in the store (so `abort_multipart` of a listed
/// upload drops them) until `complete` publishes the object.
pub(super) struct MemoryUpload {
    pub(super) store: MemoryStore,
    pub(super) key: String,
    pub(super) upload_id: String,
}

impl MemoryUpload {
    fn no_such_upload(&self, operation: &'static str) -> StoreError {
        self.store.s3_error(
            operation,
            &self.key,
            "NoSuchUpload",
            404,
            "The specified multipart upload does not exist (completed or aborted)",
        )
    }

    /// S3's rules on the parts of one upload: every part but the last at least `min_part`
    /// (R2: and all of one size).
    fn check_parts(&self, parts: &[Bytes]) -> Result<(), StoreError> {
        let limits = self.store.part_limits();
        let Some((_, init)) = parts.split_last() else {
            return Ok(());
        };
        if let Some(small) = init.iter().find(|p| (p.len() as u64) < limits.min_part) {
            return Err(self.store.s3_error(
                "CompleteMultipartUpload",
                &self.key,
                "EntityTooSmall",
                400,
                &format!(
                    "a part of {} bytes is smaller than the minimum allowed size ({} bytes)",
                    small.len(),
                    limits.min_part
                ),
            ));
        }
        if init.iter().any(|p| p.len() != init[0].len()) {
            return Err(self.store.s3_error(
                "CompleteMultipartUpload",
                &self.key,
                "InvalidPart",
                400,
                "all non-trailing parts must have the same length",
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl MultipartUpload for MemoryUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.store.check_failing("put_part", &self.key)?;
        let limits = self.store.part_limits();
        if data.len() as u64 > limits.max_part {
            return Err(self.store.s3_error(
                "UploadPart",
                &self.key,
                "EntityTooLarge",
                400,
                "the part exceeds the maximum allowed size",
            ));
        }
        let mut state = self.store.state();
        match state.uploads.get_mut(&self.upload_id) {
            Some(u) if (u.parts.len() as u64) < limits.max_parts => {
                u.parts.push(data);
                Ok(())
            }
            Some(_) => Err(self.store.s3_error(
                "UploadPart",
                &self.key,
                "InvalidArgument",
                400,
                "part number must be an integer between 1 and 10000",
            )),
            None => Err(self.no_such_upload("UploadPart")),
        }
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        self.store.check_failing("complete", &self.key)?;
        let mut state = self.store.state();
        let Some(upload) = state.uploads.get(&self.upload_id) else {
            return Err(self.no_such_upload("CompleteMultipartUpload"));
        };
        self.check_parts(&upload.parts)?;
        let Some(upload) = state.uploads.remove(&self.upload_id) else {
            return Err(self.no_such_upload("CompleteMultipartUpload"));
        };
        // No parts: dr's S3 store writes an empty object with a plain PUT.
        let etag = if upload.parts.is_empty() {
            md5_hex(&[])
        } else {
            let digests: Vec<u8> = upload
                .parts
                .iter()
                .flat_map(|p| {
                    use md5::Digest;
                    md5::Md5::digest(p).to_vec()
                })
                .collect();
            format!("{}-{}", md5_hex(&digests), upload.parts.len())
        };
        let body: Bytes = upload.parts.concat().into();
        write_version(
            &mut state,
            self.store.shared.versioning,
            &self.key,
            Some(body),
            Some(etag),
            upload.retention,
        );
        state
            .current(&self.key)
            .map(|v| meta(&self.key, v))
            .ok_or_else(|| self.no_such_upload("CompleteMultipartUpload"))
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        self.store.check_failing("abort", &self.key)?;
        self.store.state().uploads.remove(&self.upload_id);
        Ok(())
    }
}
