//! Reading objects: GetObject as a [`RangeSource`], so that every read (`get` and
//! `get_reader`) goes through a [`ResumingReader`]: a body cut mid-way is asked again with
//! `Range: bytes=N-` and `If-Match` of the first answer's ETag.

use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use tokio::io::AsyncReadExt;

use super::{S3Store, Shared};
use crate::resume::{Opened, Opening, RangeSource, ResumingReader};
use crate::{validate_key, StoreError};

/// One object of the bucket, asked for from any byte.
struct S3Object {
    shared: Arc<Shared>,
    key: String,
    full_key: String,
    location: String,
}

impl RangeSource for S3Object {
    fn open(&self, offset: u64, etag: Option<String>) -> Opening {
        let shared = Arc::clone(&self.shared);
        let (key, full, location) = (
            self.key.clone(),
            self.full_key.clone(),
            self.location.clone(),
        );
        Box::pin(async move {
            let s = &shared;
            let mut req = s.client.get_object().bucket(&s.bucket).key(&full);
            if offset > 0 {
                req = req.range(format!("bytes={offset}-"));
            }
            if let Some(tag) = &etag {
                req = req.if_match(tag);
            }
            let out = req.send().await.map_err(|e| {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if super::errors::is_not_found(&e) {
                    StoreError::NotFound { key: key.clone() }
                } else if etag.is_some()
                    && (e.code() == Some("PreconditionFailed") || status == Some(412))
                {
                    StoreError::Changed {
                        key: key.clone(),
                        location: location.clone(),
                        offset,
                        detail: format!(
                            "the service refused the rest of it: its ETag is no longer {} (412)",
                            etag.as_deref().unwrap_or_default()
                        ),
                    }
                } else {
                    s.error("GetObject", &full, &e)
                }
            })?;
            let (start, total) = match out.content_range() {
                Some(range) => parse_content_range(range).ok_or_else(|| {
                    s.protocol_error(
                        "GetObject",
                        &full,
                        format!("the answer's Content-Range `{range}` is not `bytes A-B/SIZE`"),
                    )
                })?,
                None => {
                    let size = out
                        .content_length()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| {
                            s.protocol_error("GetObject", &full, "the answer has no Content-Length")
                        })?;
                    (0, size)
                }
            };
            Ok(Opened {
                start,
                total,
                etag: out.e_tag().map(str::to_owned),
                body: Box::new(Box::pin(out.body.into_async_read())),
            })
        })
    }
}

/// `bytes START-END/SIZE` → (START, SIZE).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, size.trim().parse().ok()?))
}

impl S3Store {
    /// The first GetObject of `key`, as a reader that resumes where the body breaks off.
    pub(super) async fn reader(&self, key: &str) -> Result<ResumingReader, StoreError> {
        validate_key(key)?;
        let source = S3Object {
            shared: Arc::clone(&self.shared),
            key: key.to_owned(),
            full_key: self.shared.full_key(key),
            location: self.location.to_string(),
        };
        ResumingReader::open(
            Arc::new(source),
            key,
            self.location.to_string(),
            self.read_policy,
        )
        .await
    }

    /// The whole object, read through [`S3Store::reader`].
    pub(super) async fn read_all(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        let mut reader = self.reader(key).await?;
        // The size is the service's word: a preallocation, capped.
        let hint = usize::try_from(reader.size()).unwrap_or(0).min(64 << 20);
        let mut body = Vec::with_capacity(hint);
        if let Err(e) = reader.read_to_end(&mut body).await {
            let full = self.shared.full_key(key);
            return Err(match e.into_inner().map(|e| e.downcast::<StoreError>()) {
                Some(Ok(e)) => *e,
                Some(Err(other)) => self.shared.protocol_error(
                    "GetObject",
                    &full,
                    format!("reading the body failed: {other}"),
                ),
                None => self
                    .shared
                    .protocol_error("GetObject", &full, "reading the body failed"),
            });
        }
        Ok(bytes::Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0, 1)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("bytes 1-2/*"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
