//! An in-memory [`ObjectStore`] for tests (feature `testing`, never in a release build): the
//! engine's logic (run lock, prune, catalog) tested without S3 or a disk.
//!
//! It behaves as an S3 bucket does, errors included, so a test that passes here means what
//! it would mean against S3:
//!
//! - keys are checked like the other backends; `put_if_absent` is atomic (one winner);
//! - multipart uploads publish nothing until `complete`, are listed until completed or
//!   aborted, and follow S3's part rules (every non-final part of one size, at least
//!   [`PartLimits::min_part`]); an empty upload is an empty object;
//! - versioning ([`MemoryStore::versioned`]): every write is a new version, a plain delete
//!   adds a delete marker, `delete_version` removes one for good;
//! - Object Lock ([`MemoryStore::object_lock`]): a version retained past the store's clock
//!   cannot be deleted, nor its retention shortened (S3 `AccessDenied`); locked writes to a
//!   bucket without Object Lock are refused (S3 `InvalidRequest`).
//!
//! Its clock is the system's unless a test sets one ([`MemoryStore::set_now`]): object
//! times and lock expiry follow it. [`MemoryStore::fail`] makes chosen operations fail like
//! an unavailable service (S3 503), to test that nothing is acted on after a failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};

mod upload;
mod versions;

use upload::MemoryUpload;

use crate::{
    validate_key, validate_prefix, BucketLockState, Location, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectVersion, PartLimits, PendingUpload, Retention, StoreError, Versioning,
};

/// An S3-like bucket in memory. Clones share the bucket.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    location: Location,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    versioning: Versioning,
    object_lock: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every key's versions, oldest first; the last is the current one.
    objects: BTreeMap<String, Vec<Version>>,
    /// Uploads in progress, by upload id.
    uploads: BTreeMap<String, Upload>,
    /// `None`: the system clock.
    now: Option<DateTime<Utc>>,
    /// Numbers version and upload ids.
    counter: u64,
    /// Operations made to fail: (operation, key prefix).
    failing: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    /// `None`: a delete marker.
    body: Option<Bytes>,
    modified: DateTime<Utc>,
    etag: Option<String>,
    retention: Option<Retention>,
}

#[derive(Debug)]
struct Upload {
    key: String,
    initiated: DateTime<Utc>,
    retention: Option<Retention>,
    parts: Vec<Bytes>,
}

impl State {
    fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }

    fn next_id(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{kind}{:010}", self.counter)
    }

    /// The current version of `key` when it is an object (not a delete marker).
    fn current(&self, key: &str) -> Option<&Version> {
        self.objects
            .get(key)
            .and_then(|v| v.last())
            .filter(|v| v.body.is_some())
    }

    fn find_version(&self, key: &str, version_id: &str) -> Option<&Version> {
        self.objects
            .get(key)
            .and_then(|vs| vs.iter().find(|v| v.id == version_id))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A bucket without versioning or Object Lock, at `s3://memory/`.
    pub fn new() -> MemoryStore {
        MemoryStore::build(Versioning::Off, false)
    }

    /// A bucket with versioning enabled (no Object Lock).
    pub fn versioned() -> MemoryStore {
        MemoryStore::build(Versioning::Enabled, false)
    }

    /// A bucket with Object Lock enabled (which implies versioning).
    pub fn object_lock() -> MemoryStore {
        MemoryStore::build(Versioning::Enabled, true)
    }

    fn build(versioning: Versioning, object_lock: bool) -> MemoryStore {
        MemoryStore {
            location: Location::S3 {
                bucket: "memory".into(),
                prefix: String::new(),
                endpoint: None,
                region: None,
                path_style: false,
                max_parts: 10_000,
                object_lock: None,
            },
            shared: Arc::new(Shared {
                versioning,
                object_lock,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The same bucket seen through `location` (e.g. an `s3://` location with
    /// `[repository.object_lock]`, which dr-core reads from the store's location).
    pub fn with_location(mut self, location: Location) -> MemoryStore {
        self.location = location;
        self
    }

    /// Fix the store's clock (object times, lock expiry) at `now`.
    pub fn set_now(&self, now: DateTime<Utc>) {
        self.state().now = Some(now);
    }

    /// Make `operation` (`put`, `get`, `head`, `list`, `delete`, `put_part`, `complete`,
    /// `list_versions`, `delete_version`, ...: the trait's method names) fail for keys (or
    /// listing prefixes) starting with `key_prefix`, until [`MemoryStore::heal`].
    pub fn fail(&self, operation: &'static str, key_prefix: &str) {
        self.state()
            .failing
            .push((operation, key_prefix.to_owned()));
    }

    /// Undo every [`MemoryStore::fail`].
    pub fn heal(&self) {
        self.state().failing.clear();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.shared)
    }

    /// The S3 error the service would answer.
    fn s3_error(
        &self,
        operation: &'static str,
        key: &str,
        code: &str,
        status: u16,
        message: &str,
    ) -> StoreError {
        s3_error(&self.location, operation, key, code, status, message)
    }

    /// `Err` when a test made `operation` on `key` fail.
    fn check_failing(&self, operation: &'static str, key: &str) -> Result<(), StoreError> {
        let failing = self
            .state()
            .failing
            .iter()
            .any(|(op, prefix)| *op == operation && key.starts_with(prefix.as_str()));
        if failing {
            return Err(self.s3_error(
                operation,
                key,
                "ServiceUnavailable",
                503,
                "injected failure (MemoryStore::fail)",
            ));
        }
        Ok(())
    }

    /// Retention on a write needs a bucket with Object Lock.
    fn check_lockable(
        &self,
        operation: &'static str,
        key: &str,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        if retention.is_some() && !self.shared.object_lock {
            return Err(self.s3_error(
                operation,
                key,
                "InvalidRequest",
                400,
                "Bucket is missing Object Lock Configuration",
            ));
        }
        Ok(())
    }

    fn write(&self, key: &str, body: Bytes, etag: String, retention: Option<Retention>) {
        let mut state = self.state();
        write_version(
            &mut state,
            self.shared.versioning,
            key,
            Some(body),
            Some(etag),
            retention,
        );
    }

    async fn put_with(
        &self,
        key: &str,
        body: Bytes,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        self.check_failing("put", key)?;
        self.check_lockable("PutObject", key, retention)?;
        let etag = md5_hex(&body);
        self.write(key, body, etag, retention.copied());
        Ok(())
    }

    async fn put_if_absent_with(
        &self,
        key: &str,
        body: Bytes,
        retention: Option<&Retention>,
    ) -> Result<bool, StoreError> {
        validate_key(key)?;
        self.check_failing("put_if_absent", key)?;
        self.check_lockable("PutObject (If-None-Match)", key, retention)?;
        let etag = md5_hex(&body);
        // One lock for the check and the write: exactly one of racing creates wins.
        let mut state = self.state();
        if state.current(key).is_some() {
            return Ok(false);
        }
        write_version(
            &mut state,
            self.shared.versioning,
            key,
            Some(body),
            Some(etag),
            retention.copied(),
        );
        Ok(true)
    }

    async fn start_with(
        &self,
        key: &str,
        retention: Option<&Retention>,
    ) -> Result<Box<dyn MultipartUpload>, StoreError> {
        validate_key(key)?;
        self.check_failing("start_multipart", key)?;
        self.check_lockable("CreateMultipartUpload", key, retention)?;
        let mut state = self.state();
        let upload_id = state.next_id("upload-");
        let initiated = state.now();
        state.uploads.insert(
            upload_id.clone(),
            Upload {
                key: key.to_owned(),
                initiated,
                retention: retention.copied(),
                parts: Vec::new(),
            },
        );
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            key: key.to_owned(),
            upload_id,
        }))
    }
}

fn lock_state(shared: &Shared) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock left consistent data: every change is
    // made in one step under the lock.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn s3_error(
    location: &Location,
    operation: &'static str,
    key: &str,
    code: &str,
    status: u16,
    message: &str,
) -> StoreError {
    StoreError::S3 {
        operation,
        target: format!("{}/{key}", location.to_string().trim_end_matches('/')),
        code: Some(code.to_owned()),
        status: Some(status),
        message: format!("{code}: {message}"),
        hint: None,
    }
}

/// A new current version of `key` (`body` `None`: a delete marker). Without versioning it
/// replaces the one "null" version (and a delete removes the key).
fn write_version(
    state: &mut State,
    versioning: Versioning,
    key: &str,
    body: Option<Bytes>,
    etag: Option<String>,
    retention: Option<Retention>,
) {
    let modified = state.now();
    if versioning == Versioning::Off {
        match body {
            Some(body) => {
                let v = Version {
                    id: "null".into(),
                    body: Some(body),
                    modified,
                    etag,
                    retention,
                };
                state.objects.insert(key.to_owned(), vec![v]);
            }
            None => {
                state.objects.remove(key);
            }
        }
        return;
    }
    let id = state.next_id("v");
    state
        .objects
        .entry(key.to_owned())
        .or_default()
        .push(Version {
            id,
            body,
            modified,
            etag,
            retention,
        });
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex(&md5::Md5::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn meta(key: &str, v: &Version) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size: v.body.as_ref().map_or(0, |b| b.len() as u64),
        last_modified: Some(v.modified),
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
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
        self.put_with(key, body, None).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.put_if_absent_with(key, body, None).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        self.check_failing("get", key)?;
        match self.state().current(key) {
            Some(v) => Ok(v.body.clone().unwrap_or_default()),
            None => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
        }
    }

    async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>), StoreError> {
        validate_key(key)?;
        self.check_failing("get_reader", key)?;
        let body = self.get(key).await?;
        Ok((body.len() as u64, Box::new(std::io::Cursor::new(body))))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        validate_key(key)?;
        self.check_failing("head", key)?;
        Ok(self.state().current(key).map(|v| meta(key, v)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        self.check_failing("list", prefix)?;
        let state = self.state();
        // A BTreeMap iterates in key (byte) order, as S3 lists.
        Ok(state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, vs)| vs.last().filter(|v| v.body.is_some()).map(|v| meta(k, v)))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.check_failing("delete", key)?;
        let mut state = self.state();
        // A versioned bucket adds a delete marker, even for a key that has none (as S3 does).
        write_version(&mut state, self.shared.versioning, key, None, None, None);
        Ok(())
    }

    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.start_with(key, None).await
    }

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        validate_prefix(prefix)?;
        self.check_failing("list_multipart", prefix)?;
        let mut out: Vec<PendingUpload> = self
            .state()
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| PendingUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        out.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(out)
    }

    async fn abort_multipart(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        validate_key(&upload.key)?;
        self.check_failing("abort_multipart", &upload.key)?;
        self.state().uploads.remove(&upload.upload_id);
        Ok(())
    }

    async fn put_locked(
        &self,
        key: &str,
        body: Bytes,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.put_with(key, body, Some(retention)).await
    }

    async fn put_if_absent_locked(
        &self,
        key: &str,
        body: Bytes,
        retention: &Retention,
    ) -> Result<bool, StoreError> {
        self.put_if_absent_with(key, body, Some(retention)).await
    }

    async fn start_multipart_locked(
        &self,
        key: &str,
        retention: &Retention,
    ) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.start_with(key, Some(retention)).await
    }

    async fn lock_state(&self) -> Result<BucketLockState, StoreError> {
        Ok(BucketLockState {
            versioning: self.shared.versioning,
            object_lock: self.shared.object_lock,
            ..BucketLockState::default()
        })
    }
    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        self.versions(prefix)
    }

    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, StoreError> {
        self.retention_of(key, version_id)
    }

    async fn set_version_retention(
        &self,
        key: &str,
        version_id: &str,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.set_retention(key, version_id, retention)
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<(), StoreError> {
        self.remove_version(key, version_id)
    }

    async fn copy_version(
        &self,
        key: &str,
        version_id: &str,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        self.copy_onto(key, version_id, retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LockMode;

    fn versions_of<'a>(all: &'a [ObjectVersion], key: &str) -> Vec<&'a ObjectVersion> {
        all.iter().filter(|v| v.key == key).collect()
    }

    fn retention(mode: LockMode, until: DateTime<Utc>) -> Retention {
        Retention { mode, until }
    }

    #[tokio::test]
    async fn without_versioning_a_key_has_one_null_version() {
        let store = MemoryStore::new();
        store.put("a", Bytes::from_static(b"1")).await.expect("put");
        store
            .put("a", Bytes::from_static(b"22"))
            .await
            .expect("put");
        let v = store.list_versions("").await.expect("versions");
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].version_id.as_str(), v[0].size), ("null", 2));
        assert!(v[0].is_latest && !v[0].multipart());
        store.delete("a").await.expect("delete");
        assert!(store.list_versions("").await.expect("versions").is_empty());
        let r = retention(LockMode::Governance, Utc::now() + chrono::Duration::days(1));
        let e = store
            .put_locked("b", Bytes::new(), &r)
            .await
            .expect_err("no Object Lock");
        assert_eq!(e.s3_code(), Some("InvalidRequest"), "{e}");
        assert_eq!(
            store.lock_state().await.expect("state").versioned(),
            Some(false)
        );
    }

    #[tokio::test]
    async fn versions_delete_markers_and_undelete() {
        let store = MemoryStore::versioned();
        store
            .put("k", Bytes::from_static(b"one"))
            .await
            .expect("put");
        store
            .put("k", Bytes::from_static(b"two"))
            .await
            .expect("put");
        store.delete("k").await.expect("delete");
        assert!(
            store.head("k").await.expect("head").is_none(),
            "hidden by a marker"
        );
        assert!(store.list("").await.expect("list").is_empty());
        let all = store.list_versions("").await.expect("versions");
        let k = versions_of(&all, "k");
        assert_eq!(k.len(), 3);
        assert!(k[0].is_latest && k[0].delete_marker, "newest first: {k:?}");
        assert!(!k[1].delete_marker && k[1].size == 3 && !k[1].is_latest);
        assert!(!k[1].same_content(k[2]), "different bytes, different ETags");
        // A conditional create sees the marker as "absent".
        store.put("m", Bytes::new()).await.expect("put");
        store.delete("m").await.expect("delete");
        assert!(store
            .put_if_absent("m", Bytes::from_static(b"again"))
            .await
            .expect("create"));
        // Undelete: copy the older version onto the key.
        store
            .copy_version("k", &k[2].version_id, None)
            .await
            .expect("copy");
        assert_eq!(
            store.get("k").await.expect("get"),
            Bytes::from_static(b"one")
        );
        let marker = &k[0].version_id;
        let e = store
            .copy_version("k", marker, None)
            .await
            .expect_err("a marker cannot be copied");
        assert_eq!(e.s3_code(), Some("InvalidRequest"));
        // Deleting every version removes the key for good; unknown versions are Ok.
        for v in store.list_versions("k").await.expect("versions") {
            store
                .delete_version("k", &v.version_id)
                .await
                .expect("delete version");
        }
        store.delete_version("k", "v404").await.expect("gone is Ok");
        assert!(store
            .list_versions("")
            .await
            .expect("versions")
            .iter()
            .all(|v| v.key != "k"));
    }

    #[tokio::test]
    async fn object_lock_refuses_deletes_and_shorter_retention_until_it_expires() {
        let store = MemoryStore::object_lock();
        let now: DateTime<Utc> = "2026-11-22T03:00:00Z".parse().expect("time");
        store.set_now(now);
        let until = now + chrono::Duration::days(7);
        let locked = retention(LockMode::Compliance, until);
        store
            .put_locked("app/1/manifest.json", Bytes::from_static(b"{}"), &locked)
            .await
            .expect("put locked");
        let mut upload = store
            .start_multipart_locked("app/1/dump", &locked)
            .await
            .expect("start");
        upload
            .put_part(Bytes::from_static(b"x"))
            .await
            .expect("part");
        upload.complete().await.expect("complete");
        let all = store.list_versions("app/").await.expect("versions");
        assert_eq!(all.len(), 2);
        assert!(all[0].multipart(), "a multipart ETag: {:?}", all[0].etag);
        for v in &all {
            assert_eq!(
                store
                    .version_retention(&v.key, &v.version_id)
                    .await
                    .expect("retention"),
                Some(locked)
            );
            let e = store
                .delete_version(&v.key, &v.version_id)
                .await
                .expect_err("locked");
            assert_eq!(e.s3_code(), Some("AccessDenied"), "{e}");
        }
        let v = &all[1];
        // Shorter, or compliance weakened to governance: refused. Longer: fine.
        for shorter in [
            retention(LockMode::Compliance, until - chrono::Duration::days(1)),
            retention(LockMode::Governance, until),
        ] {
            let e = store
                .set_version_retention(&v.key, &v.version_id, &shorter)
                .await
                .expect_err("shortened");
            assert_eq!(e.s3_code(), Some("AccessDenied"));
        }
        let longer = retention(LockMode::Compliance, until + chrono::Duration::days(1));
        store
            .set_version_retention(&v.key, &v.version_id, &longer)
            .await
            .expect("extend");
        // A plain delete only adds a marker, even on a locked object.
        store.delete(&v.key).await.expect("delete adds a marker");
        let marker = store.list_versions(&v.key).await.expect("versions")[0].clone();
        assert!(marker.delete_marker);
        assert!(store
            .version_retention(&v.key, &marker.version_id)
            .await
            .is_err());
        store
            .delete_version(&v.key, &marker.version_id)
            .await
            .expect("a marker is never locked");
        // Once the lock has passed, versions can go.
        store.set_now(until + chrono::Duration::days(2));
        store
            .delete_version(&v.key, &v.version_id)
            .await
            .expect("expired");
        assert!(store
            .version_retention("app/1/manifest.json", "v999")
            .await
            .expect_err("missing")
            .is_not_found());
    }

    #[tokio::test]
    async fn part_rules_and_injected_failures() {
        let store = MemoryStore::new();
        let mut upload = store.start_multipart("a").await.expect("start");
        upload
            .put_part(Bytes::from_static(b"small"))
            .await
            .expect("part");
        upload
            .put_part(Bytes::from_static(b"last"))
            .await
            .expect("part");
        let e = upload.complete().await.expect_err("a small non-final part");
        assert_eq!(e.s3_code(), Some("EntityTooSmall"), "{e}");
        assert!(store.head("a").await.expect("head").is_none());

        store.put("app/x", Bytes::new()).await.expect("put");
        store.fail("list", "app/");
        store.fail("delete", "");
        let e = store.list("app/").await.expect_err("injected");
        assert_eq!(e.s3_code(), Some("ServiceUnavailable"));
        assert!(store.list("db/").await.is_ok(), "another prefix");
        assert!(store.delete("app/x").await.is_err());
        store.heal();
        assert_eq!(store.list("app/").await.expect("healed").len(), 1);
    }
}
