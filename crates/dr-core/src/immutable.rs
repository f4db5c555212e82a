//! Immutable backups: `[repository.object_lock]` applied to what dr writes.
//!
//! [`LockingStore`] wraps the repository's store when Object Lock is configured (see
//! [`crate::Context::open`]): every write of a backup's object carries S3 Object Lock
//! retention on the PUT or CreateMultipartUpload itself, so there is no moment at which the
//! object exists unlocked, and backup and verify need not know about locks at all. Which
//! object gets which lock is [`retention_for`]:
//!
//! - the objects of a backup (`{target}/{id}/…`: sections, globals, details, manifest) are
//!   locked until the backup's start (its id) plus `days`;
//! - verification records (`{target}/{id}/verify/…`) until the later of the backup's start
//!   and the time of writing, plus `days`: a verification of an old backup is itself locked
//!   for the full `days`, never for a day or two;
//! - the WAL archive (`{target}/wal/…`: data objects, records, the identity) from the time
//!   of writing, plus `days` (a WAL file is written once and never replaced);
//! - anything else is not locked: the run lock `locks/{target}.json`, daemon beacons
//!   `daemon/{host}.json` and `dr check`'s probe `_dr/probe-*` must stay deletable (a stale run
//!   lock that cannot be removed would stop every backup).
//!
//! The first locked write checks, once, that the bucket has Object Lock enabled: a bucket
//! without it fails the backup with a hint, rather than writing unlocked objects the operator
//! believes are protected.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dr_catalog::keys;
use dr_store::{
    BucketLockState, Location, MultipartUpload, ObjectLock, ObjectMeta, ObjectStore, ObjectVersion,
    PartLimits, PendingUpload, Retention, StoreError,
};

/// The lock an object written now under `key` gets; `None` for objects that must stay
/// deletable (anything outside a backup's prefix). Pure.
pub fn retention_for(lock: &ObjectLock, key: &str, now: DateTime<Utc>) -> Option<Retention> {
    if key
        .split_once('/')
        .is_some_and(|(_, rest)| rest.starts_with("wal/"))
    {
        return Some(lock.retention_from(now));
    }
    let (_, id, rest) = keys::parse(key)?;
    let from = if rest.starts_with("verify/") {
        id.time().max(now)
    } else {
        id.time()
    };
    let mut r = lock.retention_from(from);
    // S3 refuses a retain-until date in the past; a backup cannot be that old when written,
    // but a clock that jumps must not make the write fail.
    if r.until <= now {
        r = lock.retention_from(now);
    }
    Some(r)
}

/// What `dr check` and a refused backup say to do when the bucket cannot lock objects.
pub const NO_LOCK_HINT: &str = "Object Lock must be enabled on the bucket. AWS S3: create a bucket with it (`aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket`, which also turns on versioning) or enable it on this one (`aws s3api put-bucket-versioning --bucket NAME --versioning-configuration Status=Enabled`, then `aws s3api put-object-lock-configuration --bucket NAME --object-lock-configuration ObjectLockEnabled=Enabled`). Cloudflare R2 has no per-object retention: remove [repository.object_lock] and add an R2 bucket lock rule on the repository's prefix instead. See \"Immutable backups\" in docs/CONFIGURATION.md";

/// `Ok` when `state` lets dr lock objects; otherwise the reason (for an
/// [`StoreError::ObjectLockUnavailable`]).
pub fn lock_usable(state: &BucketLockState) -> std::result::Result<(), String> {
    if let Some(why) = &state.unknown {
        return Err(format!("its Object Lock state is unknown ({why})"));
    }
    if !state.object_lock_known() {
        return Err(format!(
            "these credentials may not read the bucket's Object Lock configuration (S3 {} is refused): grant it (AWS: s3:GetBucketObjectLockConfiguration) so dr can make sure backups are locked",
            dr_store::API_OBJECT_LOCK
        ));
    }
    if !state.object_lock {
        return Err(format!(
            "Object Lock is not enabled on the bucket (versioning: {})",
            state.versioning
        ));
    }
    Ok(())
}

/// The repository's store with `[repository.object_lock]` applied to every write of a
/// backup's object. Everything else passes through.
pub struct LockingStore {
    inner: Arc<dyn ObjectStore>,
    lock: ObjectLock,
    /// The bucket was found able to lock objects (checked once, on the first locked write).
    checked: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for LockingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockingStore")
            .field("inner", &self.inner)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl LockingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, lock: ObjectLock) -> LockingStore {
        LockingStore {
            inner,
            lock,
            checked: tokio::sync::OnceCell::new(),
        }
    }

    /// The retention for `key`, after making sure (once) that the bucket can apply it.
    async fn retention(&self, key: &str) -> Result<Option<Retention>, StoreError> {
        let Some(r) = retention_for(&self.lock, key, Utc::now()) else {
            return Ok(None);
        };
        self.checked
            .get_or_try_init(|| async {
                let state = self.inner.lock_state().await?;
                lock_usable(&state).map_err(|reason| StoreError::ObjectLockUnavailable {
                    location: self.inner.location().to_string(),
                    reason,
                    hint: NO_LOCK_HINT.to_owned(),
                })
            })
            .await?;
        Ok(Some(r))
    }
}

#[async_trait::async_trait]
impl ObjectStore for LockingStore {
    fn location(&self) -> &Location {
        self.inner.location()
    }

    fn part_limits(&self) -> PartLimits {
        self.inner.part_limits()
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        match self.retention(key).await? {
            Some(r) => self.inner.put_locked(key, body, &r).await,
            None => self.inner.put(key, body).await,
        }
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        match self.retention(key).await? {
            Some(r) => self.inner.put_if_absent_locked(key, body, &r).await,
            None => self.inner.put_if_absent(key, body).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>), StoreError> {
        self.inner.get_reader(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        match self.retention(key).await? {
            Some(r) => self.inner.start_multipart_locked(key, &r).await,
            None => self.inner.start_multipart(key).await,
        }
    }

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        self.inner.list_multipart(prefix).await
    }

    async fn abort_multipart(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        self.inner.abort_multipart(upload).await
    }

    async fn put_locked(
        &self,
        key: &str,
        body: Bytes,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.inner.put_locked(key, body, retention).await
    }

    async fn put_if_absent_locked(
        &self,
        key: &str,
        body: Bytes,
        retention: &Retention,
    ) -> Result<bool, StoreError> {
        self.inner.put_if_absent_locked(key, body, retention).await
    }

    async fn start_multipart_locked(
        &self,
        key: &str,
        retention: &Retention,
    ) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.inner.start_multipart_locked(key, retention).await
    }

    async fn lock_state(&self) -> Result<BucketLockState, StoreError> {
        self.inner.lock_state().await
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        self.inner.list_versions(prefix).await
    }

    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, StoreError> {
        self.inner.version_retention(key, version_id).await
    }

    async fn set_version_retention(
        &self,
        key: &str,
        version_id: &str,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.inner
            .set_version_retention(key, version_id, retention)
            .await
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<(), StoreError> {
        self.inner.delete_version(key, version_id).await
    }

    async fn copy_version(
        &self,
        key: &str,
        version_id: &str,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        self.inner.copy_version(key, version_id, retention).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_store::LockMode;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse::<dr_catalog::BackupId>().expect("id").time()
    }

    #[test]
    fn backup_objects_are_locked_from_the_start_and_nothing_else() {
        let lock = ObjectLock {
            mode: LockMode::Compliance,
            days: 14,
        };
        let now = t("20261122T033000Z");
        for key in [
            "app/20261122T030000Z/manifest.json",
            "app/20261122T030000Z/data-1.zst.age",
            "app/20261122T030000Z/pre-data.zst.age",
            "app/20261122T030000Z/globals.sql.zst.age",
            "app/20261122T030000Z/details.json.zst.age",
        ] {
            let r = retention_for(&lock, key, now).expect(key);
            assert_eq!(r.mode, LockMode::Compliance);
            assert_eq!(r.until, t("20261206T030000Z"), "{key}");
        }
        // A verification written later: locked for the full period from its writing.
        let verify_at = t("20261130T120000Z");
        let r = retention_for(
            &lock,
            "app/20261122T030000Z/verify/20261130T120000Z.json",
            verify_at,
        )
        .expect("verify");
        assert_eq!(r.until, t("20261214T120000Z"));
        for key in [
            "app/wal/000000010000000A/000000010000000A00000042.9f3c00112233aabb.zst.age",
            "app/wal/000000010000000A/000000010000000A00000042.rec",
            "app/wal/history/00000002.history.rec",
            "app/wal/identity.json",
        ] {
            let r = retention_for(&lock, key, now).expect(key);
            assert_eq!(
                r.until,
                t("20261206T033000Z"),
                "{key}: from the time of writing"
            );
        }
        for key in [
            "app/wal-stream/db1.json",
            "locks/app.json",
            "daemon/db1.json",
            "_dr/probe-0123456789abcdef",
        ] {
            assert_eq!(retention_for(&lock, key, now), None, "{key}");
        }
    }

    #[test]
    fn a_bucket_without_object_lock_is_refused() {
        let mut state = BucketLockState::default();
        assert!(lock_usable(&state)
            .expect_err("off")
            .contains("not enabled"));
        state.unknown = Some("the service does not implement GetObjectLockConfiguration".into());
        assert!(lock_usable(&state)
            .expect_err("unknown")
            .contains("unknown"));
        state.unknown = None;
        state.object_lock = true;
        assert!(lock_usable(&state).is_ok());
        state.object_lock = false;
        state.denied = vec![dr_store::API_OBJECT_LOCK];
        assert!(lock_usable(&state)
            .expect_err("denied")
            .contains("GetObjectLockConfiguration is refused"));
    }
}
