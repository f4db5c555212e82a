//! Versions and Object Lock of the memory store, as S3 has them: listings newest first,
//! retention that may only grow, locked versions that cannot be deleted, copies of an older
//! version onto its key.

use super::{md5_hex, write_version, MemoryStore};
use crate::{validate_key, validate_prefix, ObjectVersion, Retention, StoreError};

impl MemoryStore {
    pub(super) fn versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        validate_prefix(prefix)?;
        self.check_failing("list_versions", prefix)?;
        let state = self.state();
        let mut out = Vec::new();
        for (key, versions) in state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            // Newest first within a key, the current one first of all.
            for (i, v) in versions.iter().enumerate().rev() {
                out.push(ObjectVersion {
                    key: key.clone(),
                    version_id: v.id.clone(),
                    is_latest: i + 1 == versions.len(),
                    delete_marker: v.body.is_none(),
                    size: v.body.as_ref().map_or(0, |b| b.len() as u64),
                    last_modified: Some(v.modified),
                    etag: v.etag.clone(),
                });
            }
        }
        Ok(out)
    }

    pub(super) fn retention_of(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, StoreError> {
        validate_key(key)?;
        self.check_failing("version_retention", key)?;
        let state = self.state();
        match state.find_version(key, version_id) {
            None => Err(StoreError::NotFound {
                key: format!("{key} (version {version_id})"),
            }),
            // HEAD of a delete marker's version: S3 answers 405.
            Some(v) if v.body.is_none() => Err(self.s3_error(
                "HeadObject",
                key,
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource (a delete marker)",
            )),
            Some(v) => Ok(v.retention),
        }
    }

    pub(super) fn set_retention(
        &self,
        key: &str,
        version_id: &str,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        self.check_failing("set_version_retention", key)?;
        self.check_lockable("PutObjectRetention", key, Some(retention))?;
        let mut state = self.state();
        let now = state.now();
        let Some(v) = state
            .objects
            .get_mut(key)
            .and_then(|vs| vs.iter_mut().find(|v| v.id == version_id))
        else {
            return Err(self.s3_error(
                "PutObjectRetention",
                key,
                "NoSuchVersion",
                404,
                "The specified version does not exist",
            ));
        };
        // Without the bypass header (dr never sends it) neither mode may be shortened or
        // weakened while it lasts.
        if let Some(current) = v.retention.filter(|c| c.until > now) {
            let weaker = current.mode == crate::LockMode::Compliance
                && retention.mode == crate::LockMode::Governance;
            if retention.until < current.until || weaker {
                return Err(self.s3_error(
                    "PutObjectRetention",
                    key,
                    "AccessDenied",
                    403,
                    "Access Denied (the retention may not be shortened or weakened)",
                ));
            }
        }
        v.retention = Some(*retention);
        Ok(())
    }

    pub(super) fn remove_version(&self, key: &str, version_id: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.check_failing("delete_version", key)?;
        let mut state = self.state();
        let now = state.now();
        let Some(versions) = state.objects.get_mut(key) else {
            return Ok(());
        };
        let Some(i) = versions.iter().position(|v| v.id == version_id) else {
            return Ok(());
        };
        if versions[i].retention.is_some_and(|r| r.until > now) {
            return Err(self.s3_error(
                "DeleteObject (version)",
                key,
                "AccessDenied",
                403,
                "Access Denied (the version is locked by Object Lock)",
            ));
        }
        versions.remove(i);
        if versions.is_empty() {
            state.objects.remove(key);
        }
        Ok(())
    }

    pub(super) fn copy_onto(
        &self,
        key: &str,
        version_id: &str,
        retention: Option<&Retention>,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        self.check_failing("copy_version", key)?;
        self.check_lockable("CopyObject (version)", key, retention)?;
        let mut state = self.state();
        let source =
            match state.find_version(key, version_id) {
                None => {
                    return Err(self.s3_error(
                        "CopyObject (version)",
                        key,
                        "NoSuchVersion",
                        404,
                        "The specified version does not exist",
                    ))
                }
                Some(v) if v.body.is_none() => return Err(self.s3_error(
                    "CopyObject (version)",
                    key,
                    "InvalidRequest",
                    400,
                    "The source of a copy request may not specifically refer to a delete marker",
                )),
                Some(v) => v.clone(),
            };
        // A single-request copy has a single-part ETag.
        let body = source.body.unwrap_or_default();
        let etag = md5_hex(&body);
        write_version(
            &mut state,
            self.shared.versioning,
            key,
            Some(body),
            Some(etag),
            retention.copied(),
        );
        Ok(())
    }
}
