//! Object Lock and versions on S3: the bucket's state, version listings, one version's
//! retention, permanent deletes.

use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectLockEnabled, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode,
};

use super::*;
use crate::{
    BucketLockState, LockMode, ObjectVersion, Versioning, API_OBJECT_LOCK, API_VERSIONING,
};

pub(super) fn mode(m: LockMode) -> ObjectLockMode {
    match m {
        LockMode::Governance => ObjectLockMode::Governance,
        LockMode::Compliance => ObjectLockMode::Compliance,
    }
}

fn retention_mode(m: LockMode) -> ObjectLockRetentionMode {
    match m {
        LockMode::Governance => ObjectLockRetentionMode::Governance,
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
    }
}

fn from_mode(m: &str) -> Option<LockMode> {
    match m.to_ascii_uppercase().as_str() {
        "GOVERNANCE" => Some(LockMode::Governance),
        "COMPLIANCE" => Some(LockMode::Compliance),
        _ => None,
    }
}

pub(super) fn to_smithy(t: chrono::DateTime<chrono::Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

/// Base64 MD5 of `data`, for the Content-MD5 header S3 requires on writes with Object Lock
/// ("Content-MD5 or x-amz-sdk-checksum-algorithm header is required"). MD5 rather than an
/// SDK checksum: every S3-compatible service takes it, R2 included.
pub(super) fn content_md5(data: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(data))
}

/// Codes meaning "this service does not implement that API".
fn not_implemented(code: Option<&str>, status: Option<u16>) -> bool {
    matches!(code, Some("NotImplemented" | "MethodNotAllowed")) || matches!(status, Some(501))
}

/// "These credentials may not call that API": least-privilege keys without bucket
/// administration. Not an error of the bucket: [`BucketLockState::denied`] records it.
fn denied(code: Option<&str>, status: Option<u16>) -> bool {
    matches!(code, Some("AccessDenied")) || (code.is_none() && status == Some(403))
}

pub(super) async fn lock_state(s: &Shared) -> Result<BucketLockState, StoreError> {
    let mut state = BucketLockState::default();
    let target = format!("s3://{}", s.bucket);
    match s
        .client
        .get_bucket_versioning()
        .bucket(&s.bucket)
        .send()
        .await
    {
        Ok(out) => {
            state.versioning = match out.status() {
                Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
                Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
                _ => Versioning::Off,
            }
        }
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if not_implemented(e.code(), status) {
                state.unknown = Some("the service does not implement GetBucketVersioning".into());
                return Ok(state);
            }
            if denied(e.code(), status) {
                tracing::debug!("the credentials may not call {API_VERSIONING} on {target}");
                state.denied.push(API_VERSIONING);
            } else {
                return Err(s.error("GetBucketVersioning", "", &e)).map_err(|e| rename(e, &target));
            }
        }
    }
    // Object Lock requires versioning: a bucket that never had it has no lock to read (and
    // least-privilege keys are spared a refused request).
    if state.versioning == Versioning::Off && state.denied.is_empty() {
        return Ok(state);
    }
    match s
        .client
        .get_object_lock_configuration()
        .bucket(&s.bucket)
        .send()
        .await
    {
        Ok(out) => {
            let config = out.object_lock_configuration();
            state.object_lock = config
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled);
            state.default_retention = config
                .and_then(|c| c.rule())
                .and_then(|r| r.default_retention())
                .map(|d| {
                    let mode = d.mode().map(|m| m.as_str().to_ascii_lowercase());
                    let span = match (d.days(), d.years()) {
                        (Some(days), _) => format!("{days} days"),
                        (None, Some(years)) => format!("{years} years"),
                        (None, None) => "no period".into(),
                    };
                    format!("{} {span}", mode.as_deref().unwrap_or("no mode"))
                });
        }
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let code = e.code();
            if matches!(
                code,
                Some("ObjectLockConfigurationNotFoundError" | "ObjectLockConfigurationNotFound")
            ) || (code.is_none() && status == Some(404))
            {
                state.object_lock = false;
            } else if not_implemented(code, status) {
                state.unknown =
                    Some("the service does not implement GetObjectLockConfiguration".into());
            } else if denied(code, status) {
                tracing::debug!("the credentials may not call {API_OBJECT_LOCK} on {target}");
                state.denied.push(API_OBJECT_LOCK);
            } else {
                return Err(s.error("GetObjectLockConfiguration", "", &e))
                    .map_err(|e| rename(e, &target));
            }
        }
    }
    Ok(state)
}

/// Bucket-level requests name the bucket, not `s3://bucket/`.
fn rename(e: StoreError, target: &str) -> StoreError {
    match e {
        StoreError::S3 {
            operation,
            code,
            status,
            message,
            hint,
            ..
        } => StoreError::S3 {
            operation,
            target: target.to_owned(),
            code,
            status,
            message,
            hint,
        },
        other => other,
    }
}

pub(super) async fn list_versions(
    s: &Shared,
    prefix: &str,
) -> Result<Vec<ObjectVersion>, StoreError> {
    let root = s.root();
    let full_prefix = format!("{root}{prefix}");
    let mut out = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    loop {
        let page = s
            .client
            .list_object_versions()
            .bucket(&s.bucket)
            .prefix(&full_prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| s.error("ListObjectVersions", &full_prefix, &e))?;
        let relative = |full: Option<&str>| -> Option<String> {
            let key = full?.strip_prefix(&root)?;
            (!key.is_empty() && !key.ends_with('/')).then(|| key.to_owned())
        };
        for v in page.versions() {
            let Some(key) = relative(v.key()) else {
                continue;
            };
            out.push(ObjectVersion {
                key,
                version_id: v.version_id().unwrap_or("null").to_owned(),
                is_latest: v.is_latest().unwrap_or(false),
                delete_marker: false,
                size: v.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                last_modified: to_chrono(v.last_modified()),
                etag: v
                    .e_tag()
                    .map(|e| e.trim_matches('"').to_owned())
                    .filter(|e| !e.is_empty()),
            });
        }
        for m in page.delete_markers() {
            let Some(key) = relative(m.key()) else {
                continue;
            };
            out.push(ObjectVersion {
                key,
                version_id: m.version_id().unwrap_or("null").to_owned(),
                is_latest: m.is_latest().unwrap_or(false),
                delete_marker: true,
                size: 0,
                last_modified: to_chrono(m.last_modified()),
                etag: None,
            });
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
        if key_marker.is_none() && version_marker.is_none() {
            return Err(s.protocol_error(
                "ListObjectVersions",
                &full_prefix,
                "the listing is truncated but has no next marker; refusing to return a partial listing",
            ));
        }
    }
    // Newest first within a key; the current one first of all.
    out.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then_with(|| b.is_latest.cmp(&a.is_latest))
            .then_with(|| b.last_modified.cmp(&a.last_modified))
    });
    Ok(out)
}

pub(super) async fn version_retention(
    s: &Shared,
    key: &str,
    version_id: &str,
) -> Result<Option<Retention>, StoreError> {
    let full = s.full_key(key);
    let out = s
        .client
        .head_object()
        .bucket(&s.bucket)
        .key(&full)
        .version_id(version_id)
        .send()
        .await
        .map_err(|e| {
            if is_not_found(&e) {
                StoreError::NotFound {
                    key: format!("{key} (version {version_id})"),
                }
            } else {
                s.error("HeadObject", &full, &e)
            }
        })?;
    let mode = out.object_lock_mode().and_then(|m| from_mode(m.as_str()));
    let until = to_chrono(out.object_lock_retain_until_date());
    Ok(match (mode, until) {
        (Some(mode), Some(until)) => Some(Retention { mode, until }),
        _ => None,
    })
}

pub(super) async fn set_version_retention(
    s: &Shared,
    key: &str,
    version_id: &str,
    retention: &Retention,
) -> Result<(), StoreError> {
    let full = s.full_key(key);
    s.client
        .put_object_retention()
        .bucket(&s.bucket)
        .key(&full)
        .version_id(version_id)
        .retention(
            ObjectLockRetention::builder()
                .mode(retention_mode(retention.mode))
                .retain_until_date(to_smithy(retention.until))
                .build(),
        )
        .send()
        .await
        .map_err(|e| s.error("PutObjectRetention", &full, &e))?;
    Ok(())
}

pub(super) async fn delete_version(
    s: &Shared,
    key: &str,
    version_id: &str,
) -> Result<(), StoreError> {
    let full = s.full_key(key);
    match s
        .client
        .delete_object()
        .bucket(&s.bucket)
        .key(&full)
        .version_id(version_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || e.code() == Some("NoSuchVersion") => Ok(()),
        Err(e) => Err(s.error("DeleteObject (version)", &full, &e)),
    }
}

/// `x-amz-copy-source`: `bucket/key?versionId=…`, the key percent-encoded (but '/').
fn copy_source(bucket: &str, full_key: &str, version_id: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + full_key.len() + version_id.len() + 12);
    out.push_str(bucket);
    out.push('/');
    for b in full_key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("?versionId=");
    for b in version_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) async fn copy_version(
    s: &Shared,
    key: &str,
    version_id: &str,
    retention: Option<&Retention>,
) -> Result<(), StoreError> {
    let full = s.full_key(key);
    let mut req = s
        .client
        .copy_object()
        .bucket(&s.bucket)
        .key(&full)
        .copy_source(copy_source(&s.bucket, &full, version_id));
    if let Some(r) = retention {
        req = req
            .object_lock_mode(mode(r.mode))
            .object_lock_retain_until_date(to_smithy(r.until));
    }
    req.send()
        .await
        .map_err(|e| s.error("CopyObject (version)", &full, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(
            super::copy_source("b", "dr/app/x y+z/manifest.json", "3/a+b"),
            "b/dr/app/x%20y%2Bz/manifest.json?versionId=3%2Fa%2Bb"
        );
    }
}
