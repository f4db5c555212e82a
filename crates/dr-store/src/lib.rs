//! Object storage for `dr` repositories.
//!
//! This crate owns every byte that leaves the machine: an [`ObjectStore`] trait with two
//! implementations, S3-compatible buckets (AWS S3, Cloudflare R2, MinIO, SeaweedFS, ...) and a
//! local directory. It provides
//!
//! - atomic whole-object writes ([`ObjectStore::put`]) and conditional creates
//!   ([`ObjectStore::put_if_absent`], used for locks),
//! - streaming reads ([`ObjectStore::get_reader`]) that tolerate a slow consumer and, from
//!   S3, resume a download that broke off where it stopped (`resume`),
//! - multipart uploads ([`ObjectStore::start_multipart`]) for dumps of any size, and the
//!   listing/abort of uploads left behind by a crash,
//! - complete listings (paginated; an error rather than a partial answer),
//! - the URL schemes and backend options of `[repository]` ([`Location::parse`] with
//!   [`RepositoryOptions`]; each backend module declares its scheme, its
//!   `[repository.<scheme>]` table and its parser, registered by one line of `BACKENDS` in
//!   `location.rs`), and each backend's multipart [`PartLimits`],
//! - for tests only (feature `testing`): an in-memory store that behaves as an S3 bucket
//!   (`MemoryStore`), and the `conformance` suite every backend passes.
//!
//! Keys are relative to the repository prefix and '/'-separated, e.g.
//! `app/20261122T030000Z/manifest.json`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dr_store::StoreError> {
//! let options = dr_store::S3Options {
//!     region: Some("auto".into()),
//!     ..Default::default()
//! };
//! let location = dr_store::Location::parse("s3://backups/dr", &options.into())?;
//! let store = dr_store::open(&location).await?;
//! store.put("app/hello.txt", bytes::Bytes::from_static(b"hi")).await?;
//! let lock_taken = store.put_if_absent("app/lock", bytes::Bytes::from_static(b"me")).await?;
//! for object in store.list("app/").await? {
//!     println!("{} {}", object.key, object.size);
//! }
//! # let _ = lock_taken;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "testing")]
pub mod conformance;
mod dir;
mod error;
mod location;
mod lock;
#[cfg(feature = "testing")]
mod memory;
mod parts;
mod resume;
mod s3;

use std::sync::Arc;

pub use error::StoreError;
pub use location::{Location, RepositoryOptions};
pub use lock::{
    BucketLockState, LockMode, ObjectLock, ObjectVersion, Retention, Versioning, API_OBJECT_LOCK,
    API_VERSIONING, MAX_LOCK_DAYS,
};
#[cfg(feature = "testing")]
pub use memory::MemoryStore;
pub use parts::{PartLimits, StreamPlan, MAX_COPY_BYTES, PARTS_BUFFERED_PER_STREAM, STREAM_PART};
pub use resume::READ_RESUME_ENV;
pub use s3::S3Options;

/// Every backend dr can store to, registered here at the root that owns both (the URL parser
/// in `location` reads it; the backends import `location`'s helpers, never the reverse). A
/// new backend is its own module plus one line here.
pub(crate) const BACKENDS: &[location::Backend] = &[s3::BACKEND, dir::BACKEND];

/// One stored object, as listed or headed.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// Relative to the repository prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    /// Relative to the repository prefix.
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// A repository's storage. Obtain one with [`open`].
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    fn location(&self) -> &Location;

    /// What multipart uploads to this store may look like; callers size parts with
    /// [`PartLimits::part_size_for`].
    fn part_limits(&self) -> PartLimits;

    /// Store `body` under `key`, replacing any previous object. Readers see the old or the new
    /// object, never a partial one.
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError>;

    /// Create `key` only if it does not exist yet. `Ok(false)` when it already exists.
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError>;

    /// The whole object. [`StoreError::NotFound`] when absent.
    async fn get(&self, key: &str) -> Result<bytes::Bytes, StoreError>;

    /// The object's size and a streaming body. [`StoreError::NotFound`] when absent.
    async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>), StoreError>;

    /// `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Every object whose key starts with `prefix` (recursive), sorted by key. Complete or an
    /// error, never a partial listing.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Remove `key`. Deleting a missing key is `Ok`.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Begin a multipart upload to `key`. The object appears only on
    /// [`MultipartUpload::complete`].
    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError>;

    /// Uploads in progress (or abandoned) whose key starts with `prefix`.
    async fn list_multipart(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError>;

    /// Abort an upload found by [`ObjectStore::list_multipart`]. Aborting an upload that is
    /// already gone is `Ok`.
    async fn abort_multipart(&self, upload: &PendingUpload) -> Result<(), StoreError>;

    // Object Lock and versions. A store without them (a directory) answers `Unsupported` to
    // the locked writes and the version operations, and "versioning off, no lock" to
    // [`ObjectStore::lock_state`].

    /// [`ObjectStore::put`] with Object Lock retention set on the PUT itself: the object is
    /// never visible unlocked.
    async fn put_locked(
        &self,
        key: &str,
        _body: bytes::Bytes,
        _retention: &Retention,
    ) -> Result<(), StoreError> {
        Err(StoreError::unsupported("Object Lock", self.location(), key))
    }

    /// [`ObjectStore::put_if_absent`] with retention on the PUT.
    async fn put_if_absent_locked(
        &self,
        key: &str,
        _body: bytes::Bytes,
        _retention: &Retention,
    ) -> Result<bool, StoreError> {
        Err(StoreError::unsupported("Object Lock", self.location(), key))
    }

    /// [`ObjectStore::start_multipart`] with retention on CreateMultipartUpload: the completed
    /// object carries it.
    async fn start_multipart_locked(
        &self,
        key: &str,
        _retention: &Retention,
    ) -> Result<Box<dyn MultipartUpload>, StoreError> {
        Err(StoreError::unsupported("Object Lock", self.location(), key))
    }

    /// The bucket's versioning and Object Lock configuration.
    async fn lock_state(&self) -> Result<BucketLockState, StoreError> {
        Ok(BucketLockState::default())
    }

    /// Every version and delete marker whose key starts with `prefix`, sorted by key, then
    /// newest first. Complete or an error.
    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        Err(StoreError::unsupported(
            "object versions",
            self.location(),
            prefix,
        ))
    }

    /// The retention of one version; `None` when it has none.
    async fn version_retention(
        &self,
        key: &str,
        _version_id: &str,
    ) -> Result<Option<Retention>, StoreError> {
        Err(StoreError::unsupported("Object Lock", self.location(), key))
    }

    /// Set (extend) the retention of one version. S3 refuses to shorten a COMPLIANCE lock.
    async fn set_version_retention(
        &self,
        key: &str,
        _version_id: &str,
        _retention: &Retention,
    ) -> Result<(), StoreError> {
        Err(StoreError::unsupported("Object Lock", self.location(), key))
    }

    /// Delete one version (or delete marker) for good. A locked version is refused by the
    /// service (an S3 error, usually AccessDenied).
    async fn delete_version(&self, key: &str, _version_id: &str) -> Result<(), StoreError> {
        Err(StoreError::unsupported(
            "object versions",
            self.location(),
            key,
        ))
    }

    /// Make an older version of `key` current again: a server-side copy of it onto `key`
    /// (a new version), with `retention` set on the copy itself so it is never unlocked.
    /// Single-request copy: S3 limits it to 5 GiB.
    async fn copy_version(
        &self,
        key: &str,
        _version_id: &str,
        _retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        Err(StoreError::unsupported(
            "object versions",
            self.location(),
            key,
        ))
    }
}

/// An upload in progress. On any error from `put_part` or `complete`, call `abort`.
#[async_trait::async_trait]
pub trait MultipartUpload: Send {
    /// Parts arrive in order; all non-final parts have the same size (R2 requires it; the
    /// caller guarantees it) and respect the store's [`ObjectStore::part_limits`].
    async fn put_part(&mut self, data: bytes::Bytes) -> Result<(), StoreError>;
    /// Wait until `put_part` would start the next part at once (an upload with parts in
    /// flight has room for one more), surfacing a failed part. A caller that asks before
    /// taking the next part from its producer holds no part in memory that is not being
    /// uploaded. Uploads that send a part within `put_part` are always ready.
    async fn ready(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Make the object visible. Zero parts make an empty object.
    async fn complete(self: Box<Self>) -> Result<ObjectMeta, StoreError>;
    /// Throw the parts away.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// Open the store at `location`.
///
/// S3 uses the aws-config default credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
/// profiles, ...); when the location has no endpoint, aws-config honours AWS_ENDPOINT_URL.
/// Nothing is sent over the network here; use [`probe_writable`] to check access.
///
/// A directory is created if missing.
pub async fn open(location: &Location) -> Result<Arc<dyn ObjectStore>, StoreError> {
    open_with(location, &Credentials::Chain).await
}

/// Where an S3 store's credentials come from (a directory ignores them).
#[derive(Clone, Default)]
pub enum Credentials {
    /// The AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, ...).
    #[default]
    Chain,
    /// A profile of the shared AWS config files.
    Profile(String),
    /// Keys given by the caller (read from the environment, never from a file dr owns).
    Keys {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Chain => f.write_str("Chain"),
            Credentials::Profile(p) => write!(f, "Profile({p})"),
            Credentials::Keys { access_key_id, .. } => {
                write!(f, "Keys({access_key_id}, <secret>)")
            }
        }
    }
}

/// A secret string: never printed (Debug and Display say `<redacted>`).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// [`open`] with the credentials taken from `credentials` rather than the AWS chain (a
/// copy repository in another account).
pub async fn open_with(
    location: &Location,
    credentials: &Credentials,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    match location {
        Location::S3 { .. } => Ok(Arc::new(
            s3::S3Store::open(location.clone(), credentials).await?,
        )),
        Location::Directory { .. } => Ok(Arc::new(dir::DirStore::open(location.clone()).await?)),
    }
}

/// Write, read back and delete a small probe object under `_dr/probe-<random>`. On a
/// versioned bucket the delete only hides it: the versions it left (the probe, the delete
/// marker) are then deleted by version id, so no run leaves anything behind.
pub async fn probe_writable(store: &dyn ObjectStore) -> Result<(), StoreError> {
    let key = format!("_dr/probe-{}", random_id());
    let body = bytes::Bytes::from(format!(
        "dr write probe {} {}\n",
        chrono::Utc::now().to_rfc3339(),
        random_id()
    ));
    store.put(&key, body.clone()).await?;
    let read = store.get(&key).await;
    let deleted = store.delete(&key).await;
    if deleted.is_ok() {
        remove_versions(store, &key).await;
    }
    let read = read?;
    if read != body {
        return Err(StoreError::Mismatch {
            key,
            location: store.location().to_string(),
            detail: format!("wrote {} bytes, read back {} bytes", body.len(), read.len()),
        });
    }
    deleted
}

/// Delete every version and delete marker of exactly `key`. Best effort: a store without
/// versions, or credentials that may not list or delete them, leave them (logged at debug).
async fn remove_versions(store: &dyn ObjectStore, key: &str) {
    let versions = match store.list_versions(key).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("not removing old versions of {key}: {e}");
            return;
        }
    };
    for v in versions.iter().filter(|v| v.key == key) {
        if let Err(e) = store.delete_version(&v.key, &v.version_id).await {
            tracing::debug!("could not delete version {} of {key}: {e}", v.version_id);
        }
    }
}

/// 16 random hex digits.
pub(crate) fn random_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Keys are relative, '/'-separated, without empty, `.` or `..` segments.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        Some("empty key")
    } else if key.starts_with('/') {
        Some("keys are relative to the repository and must not start with '/'")
    } else if key.ends_with('/') {
        Some("keys must not end with '/'")
    } else if key.contains('\\') || key.contains('\0') {
        Some("keys must not contain '\\' or NUL")
    } else if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        Some("keys must not contain empty, '.' or '..' segments")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A listing prefix is empty or a key prefix (it may end with '/').
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    validate_key(trimmed).map_err(|_| StoreError::InvalidKey {
        key: prefix.to_owned(),
        reason: "a listing prefix must be empty or a relative '/'-separated path",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "app/2026/manifest.json", "_dr/probe-1", "a.b/c..d"] {
            validate_key(ok).expect(ok);
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "app/", "app/2026", "a/b/"] {
            validate_prefix(ok).expect(ok);
        }
        for bad in ["/", "/a", "a//", "../"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
